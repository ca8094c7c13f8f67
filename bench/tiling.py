"""The tiling case (issue 22): peak memory against size at one tile, the per-step cost of tiling against an
untiled run, and how far a tiled result is from the untiled one from the same seed.

Every figure comes from a real ``nst-engine stylize`` process: its peak resident set is the kernel's own count
(``wait4``'s ru_maxrss), its step times and tiling plan are read from its ``--trace``. Targets are computed in
each run (``--no-cache``), because computing them is part of the peak.
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from nst_engine.bench.cases import Setup
from nst_engine.config import StyleConfig
from nst_engine.memory import estimate_bytes


def _stylize(setup: Setup, out: Path, size: int, steps: int, tile: str, seed: int = 0) -> dict[str, Any]:
    """Run the CLI once; its peak RSS, exit status, trace and seconds per step (the median after the first)."""
    trace = out.with_suffix(".json")
    command = [sys.executable, "-m", "nst_engine", "stylize", str(setup.content), str(setup.style), "-o", str(out)]
    command += ["--model", str(setup.model_path), "--no-cache", "--size", str(size), "--scales", "1"]
    command += ["--steps", str(steps), "--tile", tile, "--seed", str(seed), "--trace", str(trace), "--quiet"]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(command, stdout=log, stderr=log)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            log.seek(0)
            raise RuntimeError(f"stylize at {size} px (tile {tile}) failed: {log.read().decode()[-2000:]}")
    data = json.loads(trace.read_text())
    times = [s["elapsed_s"] for s in data["steps"]]
    per_step = statistics.median(b - a for a, b in itertools.pairwise(times)) if len(times) > 1 else None
    return {
        "peak_rss_bytes": usage.ru_maxrss * 1024,  # kB on Linux
        "seconds_per_step": per_step,
        "seconds": data["result"]["seconds"],
        "scale": data["scales"][-1],
        "size": data["result"]["size"],
    }


def _image_bytes(height: int, width: int, config: StyleConfig) -> int:
    """What the estimate counts as image-sized when tiled: the estimate at a fixed crop, less its constant part."""
    return estimate_bytes(height, width, config, "cpu", crop=(1, 1)) - estimate_bytes(1, 1, config, "cpu", crop=(1, 1))


def tiling_case(
    setup: Setup, sizes: list[int], tile: int, overhead_size: int, overhead_tile: int, steps: int
) -> list[dict[str, Any]]:
    """Rows: one per size at ``tile`` (kind "series"), then an untiled and a tiled run at ``overhead_size``
    (kind "overhead") with their pixel difference."""
    config = StyleConfig()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            setup.log(f"tiling: {size} px at {tile} px tiles, {steps} steps")
            run = _stylize(setup, Path(tmp) / f"series-{size}.png", size, steps, str(tile))
            h, w = run["size"]
            rows.append(
                {"kind": "series", "long_side": size, "tile": tile, **run}
                | {"untiled_estimate_bytes": estimate_bytes(h, w, config, "cpu")}
                | {"image_sized_estimate_bytes": _image_bytes(h, w, config)}
            )
        results = {}
        for name, tile_arg in (("untiled", "off"), ("tiled", str(overhead_tile))):
            setup.log(f"tiling: {overhead_size} px {name}, {steps} steps")
            out = Path(tmp) / f"overhead-{name}.tif"
            results[name] = _stylize(setup, out, overhead_size, steps, tile_arg)
            results[name]["pixels"] = _read_16bit(out)
        diff = np.abs(results["tiled"].pop("pixels") - results["untiled"].pop("pixels")) * 255.0
        near = _near_borders(diff.shape[0], diff.shape[1], overhead_tile, 8)
        rows.append(
            {"kind": "overhead", "long_side": overhead_size, "tile": overhead_tile, "steps": steps}
            | {"untiled": results["untiled"], "tiled": results["tiled"]}
            | {"ratio": results["tiled"]["seconds_per_step"] / results["untiled"]["seconds_per_step"]}
            | {"mean_diff_255": float(diff.mean()), "max_diff_255": float(diff.max())}
            | {
                "mean_diff_near_borders_255": float(diff[near].mean()),
                "mean_diff_elsewhere_255": float(diff[~near].mean()),
            }
        )
    return rows


def _near_borders(height: int, width: int, tile: int, band: int) -> np.ndarray:
    """(H, W) bool: within ``band`` px of a border between two tile cores (where a seam would be)."""
    ys, xs = np.arange(height), np.arange(width)

    def close(coords: np.ndarray, size: int) -> np.ndarray:
        borders = np.arange(tile, size, tile)
        if not len(borders):
            return np.zeros(size, dtype=bool)
        return np.abs(coords[:, None] - borders[None, :]).min(axis=1) < band

    return close(ys, height)[:, None] | close(xs, width)[None, :]


def _read_16bit(path: Path) -> np.ndarray:
    """A 16-bit TIFF as float64 in [0, 1]."""
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.dtype != np.uint16:
        raise RuntimeError(f"'{path}' is not the 16-bit TIFF the engine writes")
    return pixels.astype(np.float64) / 65535.0


def markdown(rows: list[dict[str, Any]]) -> list[str]:
    """The report's section."""
    gib = 2**30
    series = [r for r in rows if r["kind"] == "series"]
    lines = [
        "## Tiling",
        "",
        "Each row is one `nst-engine stylize` process (`--scales 1 --no-cache`, targets included); peak RSS is the"
        " kernel's count for that process. The image-sized estimate is what the engine's estimate says grows with"
        " the image when tiled (image, gradient, L-BFGS history, content targets).",
        "",
        "| long side | size | tiles (px, halo) | peak RSS GiB | engine's tiled estimate GiB | untiled estimate GiB "
        "| image-sized part GiB | s/step |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in series:
        scale = r["scale"]
        plan = f"{scale['tiles']} ({scale['tile']}, {scale['halo']})" if scale["tiled"] else "whole"
        estimate = f"{scale['estimated_peak_bytes'] / gib:.1f}" if scale["tiled"] else "n/a"
        step = f"{r['seconds_per_step']:.1f}" if r["seconds_per_step"] else "n/a"
        lines.append(
            f"| {r['long_side']} | {r['size'][1]}x{r['size'][0]} | {plan} | {r['peak_rss_bytes'] / gib:.2f} | "
            f"{estimate} | {r['untiled_estimate_bytes'] / gib:.1f} | {r['image_sized_estimate_bytes'] / gib:.2f} "
            f"| {step} |"
        )
    for a, b in itertools.pairwise(series):
        grew = (b["peak_rss_bytes"] - a["peak_rss_bytes"]) / gib
        expected = (b["image_sized_estimate_bytes"] - a["image_sized_estimate_bytes"]) / gib
        lines.append(
            f"\nFrom {a['long_side']} to {b['long_side']} px the peak grew {grew:.2f} GiB; the image-sized buffers "
            f"the estimate counts grew {expected:.2f} GiB."
        )
    for r in rows:
        if r["kind"] != "overhead":
            continue
        tiled, untiled = r["tiled"], r["untiled"]
        lines += [
            "",
            f"At {r['long_side']} px ({untiled['size'][1]}x{untiled['size'][0]}), {r['steps']} steps from seed 0: "
            f"untiled {untiled['seconds_per_step']:.2f} s/step, peak {untiled['peak_rss_bytes'] / gib:.2f} GiB; "
            f"tiled ({tiled['scale']['tiles']} tiles of {r['tile']} px, halo {tiled['scale']['halo']}) "
            f"{tiled['seconds_per_step']:.2f} s/step, peak {tiled['peak_rss_bytes'] / gib:.2f} GiB: tiling costs "
            f"{r['ratio']:.2f}x per step here. The two 16-bit results differ by {r['mean_diff_255']:.2e} on average "
            f"and {r['max_diff_255']:.2e} at most, in units of 1/255; within 8 px of a border between tile cores "
            f"the mean difference is {r['mean_diff_near_borders_255']:.2e}, "
            f"elsewhere {r['mean_diff_elsewhere_255']:.2e} "
            "(a seam would show as a larger difference near the borders).",
        ]
    return [*lines, ""]
