"""A contact sheet of one photo under each quality control, labelled with the weights used.

    python -m bench.gallery --weights vgg19 --size 384 -o out/gallery.png

With random weights the sheet says so across the top: it shows what each control does to the optimisation,
not what a trained network paints. Do not commit a sheet made with random weights as a result.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from engine import images
from engine.api import load_content, load_styles, open_model, target_source
from engine.config import StyleConfig
from engine.presets import preset
from engine.stylize import stylize

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "images"


def _tile(image: torch.Tensor, label: str, side: int) -> np.ndarray:
    side = max(side, 192)  # room for the label
    rgb = (images.to_array(image) * 255).round().astype(np.uint8)[:, :, ::-1]
    h, w = rgb.shape[:2]
    scale = side / max(h, w)
    rgb = np.asarray(cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA), np.uint8)
    tile = np.full((side + 24, side, 3), 255, np.uint8)
    tile[24 : 24 + rgb.shape[0], : rgb.shape[1]] = rgb
    cv2.putText(tile, label, (4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return tile


def _halves(height: int, width: int) -> list[torch.Tensor]:
    left = torch.zeros(1, 1, height, width)
    left[..., : width // 2] = 1.0
    return [left, 1 - left]


def render(weights: str, size: int, steps: int, content: Path, styles: list[Path], out: Path) -> Path:
    base = StyleConfig(size=size, steps=steps)
    model = open_model(base, weights=weights, provider="auto")
    targets = target_source(model, None)
    photo = load_content(content, base)
    style_ts = load_styles(styles, base)
    runs: list[tuple[str, StyleConfig, dict[str, list[torch.Tensor]]]] = [
        ("single scale", base, {}),
        ("3 scales", base.replace(scales=3), {}),
        ("colour: luminance", base.replace(preserve_colors="luminance"), {}),
        ("colour: histogram", base.replace(preserve_colors="histogram"), {}),
        ("two masked styles", base, {"styles": style_ts[:2], "style_masks": _halves(*photo.shape[-2:])}),
    ]
    for name in ("gatys", "jcjohnson", "tutorial"):
        runs.append((f"preset {name}", StyleConfig(**{**preset(name), "size": size, "steps": steps}), {}))
    tiles = [_tile(photo, "content", size), _tile(style_ts[0], "style", size)]
    for label, config, extra in runs:
        print(f"rendering {label}", file=sys.stderr)
        fits = config.pooling == model.info.pooling and set(config.layers) <= set(model.info.layers)
        net = model.torch_module(config.layers) if fits else None
        if net is None:
            model_for = open_model(config, weights=weights, provider="auto")
            net, run_targets = model_for.torch_module(config.layers), target_source(model_for, None)
        else:
            run_targets = targets
        result = stylize(
            photo,
            extra.get("styles", style_ts[:1]),
            config=config,
            net=net,
            targets=run_targets,
            style_masks=extra.get("style_masks"),
        )
        tiles.append(_tile(result.image, label, size))
    columns = 4
    while len(tiles) % columns:
        tiles.append(np.full_like(tiles[0], 255))
    rows = [np.hstack(tiles[i : i + columns]) for i in range(0, len(tiles), columns)]
    sheet = np.vstack(rows)
    banner = np.full((52, sheet.shape[1], 3), 255, np.uint8)
    source, _, note = model.info.weights_label.partition(" (")
    color = (0, 0, 200) if not model.info.pretrained else (0, 0, 0)
    for row, text in enumerate((f"weights: {source}", note.rstrip(")"))):
        cv2.putText(banner, text[:110], (6, 20 + 22 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1, cv2.LINE_AA)
    sheet = np.vstack([banner, sheet])
    ok, data = cv2.imencode(".png", sheet)
    assert ok
    images.write_atomic(out, data.tobytes())
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="vgg19", help="vgg19, a .pth path, or random (labelled as such)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--content", type=Path, default=SAMPLES / "content_tubingen.jpg")
    parser.add_argument("--style", type=Path, action="append", help="first and second style (masks use both)")
    parser.add_argument("-o", "--out", type=Path, default=Path("out/gallery.png"))
    args = parser.parse_args(argv)
    styles = args.style or [SAMPLES / "style_starry_night.jpg", SAMPLES / "style_great_wave.jpg"]
    if len(styles) < 2:
        styles.append(SAMPLES / "style_great_wave.jpg")
    print(render(args.weights, args.size, args.steps, args.content, styles, args.out))


if __name__ == "__main__":
    main()
