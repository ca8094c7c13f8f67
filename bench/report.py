"""Render benchmark rows as report.md, results.json and PNG charts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nst_engine.bench.cluster import markdown as cluster_markdown
from nst_engine.bench.tiling import markdown as tiling_markdown
from nst_engine.bench.video import markdown as video_markdown


def relative_speed(speedup: float) -> str:
    """A time ratio in words that cannot be misread: "1.34x faster" or "1.12x slower"."""
    return f"{speedup:.2f}x faster" if speedup >= 1 else f"{1 / speedup:.2f}x slower"


def _ms(stats: dict[str, Any]) -> str:
    return f"{stats['median'] * 1e3:.1f} ({stats['p10'] * 1e3:.1f}-{stats['p90'] * 1e3:.1f})"


def _header(env: dict[str, Any]) -> list[str]:
    gpu = env["gpu"]
    gpu_text = (
        f"{gpu['name']} ({gpu.get('memory_gib')} GiB, driver {gpu.get('driver')}, CUDA {gpu.get('cuda')})"
        if gpu.get("name")
        else f"none ({gpu.get('reason')})"
    )
    return [
        f"- date: {env['date']}; nst-engine {env['nst_engine']} at commit {env['git_commit']}",
        f"- CPU: {env['cpu']}, {env['cores']} cores, vector ISA {env.get('cpu_isa', '?')}, "
        f"torch threads {env['torch_threads']}",
        f"- GPU: {gpu_text}",
        f"- torch {env['torch']}, onnxruntime {env['onnxruntime']}, onnx {env['onnx']}, Python {env['python']}",
        f"- ONNX Runtime providers: {', '.join(env['providers'])}",
        f"- weights: {env['weights']}",
    ]


def markdown(env: dict[str, Any], results: dict[str, list[dict[str, Any]]], quick: bool) -> str:
    lines = [
        "# nst-engine benchmark report",
        "",
        *_header(env),
        "",
        f"Mode: {'quick' if quick else 'full'}. Times are medians with the 10th-90th percentile range in "
        "brackets; warm-up runs excluded; every sample is in results.json.",
        "",
    ]
    sections = (("forward", _forward_md), ("step", _step_md), ("ttq", _ttq_md), ("cache", _cache_md),
                ("multiscale", _multiscale_md))  # fmt: skip
    for key, section in sections:
        if results.get(key):
            lines += section(results[key])
    if results.get("tiling"):
        lines += tiling_markdown(results["tiling"])
    if results.get("cluster"):
        lines += cluster_markdown(results["cluster"])
    if results.get("web"):
        from nst_engine.bench.web import markdown as web_markdown

        lines += web_markdown(results["web"])
    if results.get("video"):
        lines += video_markdown(results["video"])
    if results.get("losses"):
        from nst_engine.bench.losses import losses_markdown

        lines += losses_markdown(results["losses"])
    if results.get("profile"):
        from nst_engine.bench.profile import profile_markdown

        lines += profile_markdown(results["profile"])
    if results.get("print"):
        from nst_engine.bench.printsize import print_markdown

        lines += print_markdown(results["print"])
    if results.get("startup"):
        from nst_engine.bench.startup import startup_markdown

        lines += startup_markdown(results["startup"])
    return "\n".join(lines)


def _forward_md(rows: list[dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    lines += [
        "## Feature forward (targets)",
        "",
        "| backend | size | images/s | ms (p10-p90) | max rel diff vs torch fp32 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if r["status"] == "ok":
            lines.append(
                f"| {r['backend']} | {r['size']} | {r['images_per_s']:.2f} | {_ms(r['seconds'])} | "
                f"{r['max_rel_diff']:.1e} |"
            )
        else:
            lines.append(f"| {r['backend']} | {r['size']} | unavailable | {r['reason']} | |")
    lines.append("")
    return lines


def _step_md(rows: list[dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    lines += [
        "## Optimisation step",
        "",
        "Same loss on both sides (engine layers through relu5_1, Gram / CHW, "
        "style weight 1e6 per layer). Ratio: baseline ms/step divided by this configuration's.",
        *_rounds_line(rows),
        "",
        "| configuration | size | ms/step (p10-p90) | steps/s | peak memory MiB | speed vs baseline |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        peak = f"{r['peak_mib']:.0f}" if r.get("peak_mib") else "n/a"
        lines.append(
            f"| {r['config']} | {r['size']} | {_ms(r['seconds'])} | {1 / r['seconds']['median']:.2f} | "
            f"{peak} | {r['ratio']:.2f}x |"
        )
    lines += [
        "",
        "Peak memory on CPU is the process's peak resident set (VmHWM, reset before each timed block; the"
        " largest over the rounds)."
        " On CUDA it is torch.cuda.max_memory_allocated.",
        "",
    ]
    return lines


def _ttq_md(rows: list[dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    for r in rows:
        if r.get("engine_seconds"):
            engine = f"reached it in {r['engine_seconds']:.1f} s ({r['engine_steps']} steps, {r['speedup']:.2f}x)"
            if r.get("engine_loss") is not None:
                engine += f", its image scoring {r['engine_loss']:.4g}"
        else:
            best = r.get("engine_best_loss")
            ran = r.get("engine_steps_run", 3 * r["baseline_evaluations"])
            engine = f"did not reach it in {ran} steps (runs stop at 3x the baseline's evaluations or 1.5x its time)"
            if best is not None:
                engine += f"; its best loss was {best:.4g}, after {r['engine_seconds_run']:.1f} s"
        lines += [
            "## Time to quality",
            "",
            f"At {r['size']} px the baseline's {r['baseline_evaluations']} L-BFGS evaluations took "
            f"{r['baseline_seconds']:.1f} s to reach a loss of {r['target_loss']:.4g} (evaluated in fp32 at "
            f"full size with the same loss); the engine ({r.get('config', 'default')}, the fastest measured step "
            f"configuration) {engine}.",
            "",
        ]
    return lines


def _cache_md(rows: list[dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    lines += [
        "## Target cache (batch of images in one style)",
        "",
        "| run | images | size | target seconds per image | ONNX Runtime forward passes | cache hits |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['run']} | {r['images']} | {r['size']} | {r['target_seconds_per_image']:.4f} | "
        f"{r['forward_passes']} | {r['hits']} |"
        for r in rows
    ]
    lines.append("")
    return lines


def _multiscale_md(rows: list[dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    for r in rows:
        multi = (
            f"{r['multi_seconds']:.1f} s ({relative_speed(r['speedup'])})"
            if r.get("multi_seconds")
            else "did not reach it"
        )
        lines += [
            "## Coarse to fine",
            "",
            f"Single scale at {r['size']} px: {r['single_steps']} steps, {r['single_seconds']:.1f} s, final "
            f"loss {r['target_loss']:.4g}. Three scales ({r['size'] // 4}, {r['size'] // 2}, {r['size']} px) "
            f"reached that loss in {multi}.",
            "",
        ]
    return lines


def charts(results: dict[str, list[dict[str, Any]]], out: Path) -> list[str]:
    """PNG charts; none (and a note) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        written.append(name)

    def spread(rows: list[dict[str, Any]], scale: float, invert: bool = False) -> list[list[float]]:
        """Error bars from each row's p10..p90 around its median (for a rate, of the inverted times)."""
        lows, highs = [], []
        for r in rows:
            stats = r["seconds"]
            median, p10, p90 = stats["median"], stats.get("p10", stats["median"]), stats.get("p90", stats["median"])
            if invert:
                lows.append(scale / median - scale / p90)
                highs.append(scale / p10 - scale / median)
            else:
                lows.append((median - p10) * scale)
                highs.append((p90 - median) * scale)
        return [lows, highs]

    ok = [r for r in results.get("forward", []) if r["status"] == "ok"]
    if ok:
        fig, ax = plt.subplots(figsize=(8, 0.4 * len(ok) + 1.5))
        labels = [f"{r['backend']} @ {r['size']}" for r in ok]
        ax.barh(labels, [r["images_per_s"] for r in ok], xerr=spread(ok, 1.0, invert=True), capsize=3)
        ax.set_xlabel("images/s (higher is better; bars: p10-p90)")
        ax.set_title("Feature forward")
        save(fig, "forward.png")
    steps = results.get("step", [])
    if steps:
        fig, ax = plt.subplots(figsize=(8, 0.4 * len(steps) + 1.5))
        values = [r["seconds"]["median"] * 1e3 for r in steps]
        ax.barh([f"{r['config']} @ {r['size']}" for r in steps], values, xerr=spread(steps, 1e3), capsize=3)
        ax.set_xlabel("ms per step (lower is better; bars: p10-p90)")
        ax.set_title("Optimisation step")
        save(fig, "step.png")

    def race(rows: list[dict[str, Any]], sides: tuple[tuple[str, str], tuple[str, str]], what: str, name: str) -> None:
        """Two bars per size: the reference's time and the challenger's (missing when it never got there)."""
        fig, ax = plt.subplots(figsize=(8, 0.5 * 2 * len(rows) + 1.5))
        # A coarse-to-fine row races the same baseline: its bar is named apart, or it would overwrite the other.
        variant = [", coarse to fine" if "scales" in str(r.get("config", "")) else "" for r in rows]
        labels = [f"{label}{v if i else ''} @ {r['size']}" for r, v in zip(rows, variant, strict=True)
                  for i, (_, label) in enumerate(sides)]  # fmt: skip
        values = [r.get(key) or float("nan") for r in rows for key, _ in sides]
        ax.barh(labels, values)
        ax.set_xlabel(f"seconds to {what} (lower is better; a missing bar: not reached)")
        ax.set_title(name)
        save(fig, name.lower().replace(" ", "_") + ".png")

    if results.get("ttq"):
        race(results["ttq"], (("baseline_seconds", "baseline"), ("engine_seconds", "engine")), "the baseline's loss",
             "Time to quality")  # fmt: skip
    cache = results.get("cache", [])
    if cache:
        fig, ax = plt.subplots(figsize=(8, 0.5 * len(cache) + 1.5))
        ax.barh([f"{r['run']} @ {r['size']}" for r in cache], [r["target_seconds_per_image"] for r in cache])
        ax.set_xlabel("target seconds per image (lower is better)")
        ax.set_title("Target cache")
        save(fig, "cache.png")
    if results.get("multiscale"):
        race(
            results["multiscale"],
            (("single_seconds", "single scale"), ("multi_seconds", "coarse to fine")),
            "the single-scale loss",
            "Coarse to fine",
        )
    return written


def write(out: Path, env: dict[str, Any], results: dict[str, list[dict[str, Any]]], quick: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(
        json.dumps({"environment": env, "quick": quick, "results": results}, indent=2) + "\n"
    )
    images = charts(results, out)
    text = markdown(env, results, quick)
    if images:
        text += "\n" + "\n".join(f"![{name}]({name})" for name in images) + "\n"
    (out / "report.md").write_text(text)


def _rounds_line(rows: list[dict[str, Any]]) -> list[str]:
    """How the step rows were sampled (reports written before rounds existed have no ``rounds`` field)."""
    rounds = rows[0].get("rounds") if rows else None
    if not rounds:
        return []
    return [
        f"Every configuration was timed in {rounds} interleaved rounds, in reverse order on alternate rounds,"
        " so that a shared machine's drift falls on all of them alike; the samples of all rounds are pooled."
    ]
