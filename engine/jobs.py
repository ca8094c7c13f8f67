"""Which files a run reads and writes: content folders and globs, styles, output names, and the one check of
every path a run will write."""

from __future__ import annotations

import glob
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nst_engine.errors import ConfigError, ImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
DEFAULT_PATTERN = "{stem}_{style}.png"
#: The outputs a run can write, by suffix, with the encoder's suffix for each.
OUTPUT_SUFFIXES = {".png": ".png", ".jpg": ".jpg", ".jpeg": ".jpg", ".tif": ".tiff", ".tiff": ".tiff"}


def checkpoint_path(output: Path) -> Path:
    """Where an interrupted run writing ``output`` leaves its checkpoint: OUT.png.ckpt."""
    return output.with_name(output.name + ".ckpt")


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
    check_name("-o", out)
    if _real(out) is None or (out.is_symlink() and not out.exists()):
        raise ConfigError(f"-o '{output}' is a symlink that leads nowhere (broken, or a loop); give a real path")
    single_file = out.suffix.lower() in OUTPUT_SUFFIXES and not out.is_dir()
    if single_file:
        if len(contents) > 1:
            raise ConfigError(f"{len(contents)} content images but -o '{output}' is one file; pass a folder for -o")
        return [Job(contents[0], out)]
    if out.suffix and not out.is_dir():
        raise ConfigError(
            f"cannot write '{output}': the output must end in .png, .jpg, .jpeg, .tif or .tiff, or be a folder "
            "for a batch"
        )
    pattern = pattern or DEFAULT_PATTERN
    label = style_label(styles)
    jobs: list[Job] = []
    for content in contents:
        try:
            name = pattern.format(stem=content.stem, style=label, ext=content.suffix.lstrip("."))
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise ConfigError(f"bad --name pattern '{pattern}' ({exc}); use fields {{stem}} and {{style}}") from exc
        if Path(name).suffix.lower() not in OUTPUT_SUFFIXES:
            raise ConfigError(f"--name pattern '{pattern}' must end in .png, .jpg or .tif")
        target = out / name
        check_name("--name", target)
        if Path(name).is_absolute() or not target.resolve().is_relative_to(out.resolve()):
            raise ConfigError(
                f"--name '{pattern}' would write '{target}', outside the -o folder; use a plain file name"
            )
        jobs.append(Job(content, target))
    names = [j.output for j in jobs]
    if len(set(names)) != len(names):
        raise ConfigError("two content images map to the same output name; add {stem} to --name")
    return jobs


def step_path(output: Path, step: int) -> Path:
    """Where --save-every writes ``output``'s image after ``step``: OUT.stepN.png beside OUT.png."""
    return output.with_name(f"{output.stem}.step{step}{output.suffix}")


def _is_step_file(candidate: Path, output: Path) -> bool:
    prefix, suffix = f"{output.stem}.step", output.suffix
    number = candidate.name[len(prefix) : len(candidate.name) - len(suffix)]
    return candidate.name.startswith(prefix) and candidate.name.endswith(suffix) and number.isdigit()


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop, which names no file
        return False


def _real(path: Path) -> Path | None:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: not a path anything can be written through
        return None


def check_apart(what: str, output: Path, inputs: Sequence[Path]) -> None:
    """``output`` (a file or a folder a run writes) is not an input of the run, does not hold one (a folder that
    contains an input file or folder) and does not sit inside one (an input folder), however either was named:
    relative, through a symlink, or matched by a glob."""
    out = _real(output)
    if out is None:
        raise ConfigError(f"{what} '{output}' is a symlink loop; give a real path")
    for source in inputs:
        real = _real(source)
        if real is None:
            continue
        if out == real or _same(output, source):
            kind = "the input folder" if real.is_dir() else "an input of this run"
            raise ConfigError(f"{what} '{output}' is {kind} ('{source}'); write somewhere else")
        if real.is_relative_to(out):
            raise ConfigError(
                f"{what} '{output}' holds an input of this run ('{source}'); write to a folder of its own"
            )
        if out.is_relative_to(real):
            raise ConfigError(f"{what} '{output}' is inside the input folder '{source}'; write somewhere else")


#: The longest file name most filesystems take, in bytes.
NAME_MAX = 255


def check_name(what: str, path: Path) -> None:
    """No part of ``path`` is longer than a file name may be (the OS refuses even to look such a path up)."""
    for part in path.parts:
        if len(part.encode()) > NAME_MAX:
            raise ConfigError(
                f"{what} '{part[:40]}...' is a name of {len(part.encode())} bytes, over the {NAME_MAX} a file name "
                "may have; use a shorter name"
            )


def check_writable(what: str, path: Path) -> None:
    """``path`` can be created: a short enough name, in a folder (or under one to be made) that takes files.
    Checked before a run, so that a bad -o fails at once, not after minutes of optimisation."""
    if len(path.name.encode()) > NAME_MAX:
        raise ConfigError(
            f"{what} '{path.name[:40]}...' is a name of {len(path.name.encode())} bytes, over the "
            f"{NAME_MAX} a file name may have; use a shorter name"
        )
    if path.is_dir():
        raise ConfigError(f"{what} '{path}' is a folder; give a file name")
    folder = path.parent
    while not folder.exists():
        if folder.is_symlink() or folder == folder.parent:
            break
        folder = folder.parent
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"cannot write {what} '{path}': '{folder}' is a file, not a folder; choose another path")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ConfigError(
            f"cannot write {what} '{path}': folder '{folder}' does not take new files ({exc.strerror}); "
            "choose another path"
        ) from None


def may_replace(output: Path, overwrite: bool, resume: Path | None) -> bool:
    """Whether a run may write over an existing ``output``: with --overwrite, or when it resumes the checkpoint
    that an interrupted run writing this very output left (its partial image is what is being continued)."""
    if overwrite or not output.exists():
        return True
    return resume is not None and _same(checkpoint_path(output), resume)


def check_writes(
    jobs: Sequence[Job],
    inputs: Sequence[Path],
    trace: Path | None,
    overwrite: bool,
    save_every: int,
    resume: Path | None = None,
) -> None:
    """Every path a run will write is checked here, once, before anything runs: none is an input of the run, and
    the trace (like the outputs, checked by the caller) must not exist unless --overwrite says to replace it."""
    writes: list[tuple[str, Path]] = [("-o", j.output) for j in jobs]
    writes += [("the checkpoint", checkpoint_path(j.output)) for j in jobs]
    if trace is not None:
        writes.append(("--trace", trace))
        if trace.is_dir():
            raise ConfigError(f"--trace '{trace}' is a folder; give a file name such as trace.json")
        if trace.exists() and not overwrite:
            raise ConfigError(f"--trace '{trace}' exists; pass --overwrite to replace it, or another name")
    for what, path in writes:
        check_writable(what, path)
        if resume is not None and what != "the checkpoint" and _same(path, resume):
            raise ConfigError(f"{what} '{path}' is the checkpoint being resumed; write somewhere else")
        for source in inputs:
            if _same(path, source):
                raise ConfigError(f"{what} '{path}' is an input of this run ('{source}'); write somewhere else")
    if save_every:
        for job in jobs:
            for source in inputs:
                if _is_step_file(source, job.output) and _same(source.parent, job.output.parent):
                    raise ConfigError(
                        f"--save-every would write '{source}', an input of this run; write -o somewhere else"
                    )


def check_save_every(save_every: int) -> None:
    if save_every < 0:
        raise ConfigError(f"--save-every must be 0 (off) or a positive number of steps, not {save_every}")
