"""Which files a stylize command reads and writes: content folders and globs, styles, output names."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ConfigError, ImageError
from engine.images import OUTPUT_SUFFIXES

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
DEFAULT_PATTERN = "{stem}_{style}.png"


def expand(specs: Sequence[str], what: str, unique: bool = True) -> list[Path]:
    """Files named by paths, folders (their images, sorted) and globs; a spec matching nothing is an error.

    Content images are de-duplicated; styles are not (the same painting may be given twice with two masks)."""
    out: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise ImageError(f"{what} folder '{spec}' holds no images (.jpg, .png, ...)")
            out += found
        elif any(ch in spec for ch in "*?[") and not path.exists():
            found = sorted(Path(p) for p in glob.glob(spec) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ImageError(f"{what} pattern '{spec}' matches no image files")
            out += found
        else:
            out.append(path)
    return list(dict.fromkeys(out)) if unique else out


@dataclass(frozen=True)
class Job:
    content: Path
    output: Path


def style_label(styles: Sequence[Path]) -> str:
    return "+".join(s.stem for s in styles)


def plan(contents: Sequence[Path], styles: Sequence[Path], output: str, pattern: str | None) -> list[Job]:
    """One job per content image. ``output`` is a file for a single image, else a folder named by ``pattern``."""
    out = Path(output)
    single_file = out.suffix.lower() in OUTPUT_SUFFIXES and not out.is_dir()
    if single_file:
        if len(contents) > 1:
            raise ConfigError(f"{len(contents)} content images but -o '{output}' is one file; pass a folder for -o")
        return [Job(contents[0], out)]
    if out.suffix and not out.is_dir():
        raise ConfigError(
            f"cannot write '{output}': the output must end in .png, .jpg or .jpeg, or be a folder for a batch"
        )
    pattern = pattern or DEFAULT_PATTERN
    label = style_label(styles)
    jobs: list[Job] = []
    for content in contents:
        try:
            name = pattern.format(stem=content.stem, style=label, ext=content.suffix.lstrip("."))
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"bad --name pattern '{pattern}' ({exc}); use fields {{stem}} and {{style}}") from exc
        if Path(name).suffix.lower() not in OUTPUT_SUFFIXES:
            raise ConfigError(f"--name pattern '{pattern}' must end in .png or .jpg")
        jobs.append(Job(content, out / name))
    names = [j.output for j in jobs]
    if len(set(names)) != len(names):
        raise ConfigError("two content images map to the same output name; add {stem} to --name")
    return jobs
