"""Benchmark cases. Each takes a Setup and returns rows (plain dicts) for the report."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from nst_engine import images
from nst_engine.bench import baseline
from nst_engine.bench.backends import BACKENDS
from nst_engine.bench.timing import measure, peak_memory_mib, reset_peak_memory, summary, sync
from nst_engine.config import StyleConfig
from nst_engine.objective import Objective
from nst_engine.optim.loop import optimize
from nst_engine.resize import resize_long
from nst_engine.targets import StyleRegion, content_target, style_target
from nst_engine.vgg import VGGFeatures
from nst_engine.weights import Weights

#: The engine objective that equals the baseline's loss exactly: same layers, Gram / (C*H*W) and mean squared
#: errors, style weight 1e6 per layer (ours averages the layers, so 5e6), no total variation.
# The baseline's loss on the network's own (raw) features, so both sides minimise the same function.
SAME_LOSS: dict[str, Any] = {"style_weight": 5e6, "content_weight": 1.0, "tv_weight": 0.0, "feature_units": "raw"}


@dataclass
class Setup:
    weights: Weights
    model_path: Path
    content: Path
    style: Path
    quick: bool
    device: torch.device
    log: Any = print
    extra: dict[str, Any] = field(default_factory=dict)


def _device(setup: Setup) -> Literal["cpu", "cuda"]:
    return "cuda" if setup.device.type == "cuda" else "cpu"


def _pair(setup: Setup, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Content at ``size``, and the style resized to the content's shape (the baseline needs equal sizes)."""
    content = images.load(setup.content, size)
    return content, baseline.same_size(images.load(setup.style, size), content)


def same_loss(setup: Setup) -> dict[str, Any]:
    """The loss both sides minimise, in raw feature units. Random weights keep the historic 5e6 : 1 (so reports stay
    comparable); trained weights get the engine's default balance, converted from normalised units with the
    weights' measured feature scale s (content / s^2, Gram style / s^4), which the baseline's weights then match."""
    if not setup.weights.pretrained:
        return dict(SAME_LOSS)
    from nst_engine.vgg import measure_feature_scale

    w = setup.weights
    scale = measure_feature_scale(w.state, w.network, w.convention)
    defaults = StyleConfig()
    return {
        "style_weight": defaults.style_weight / scale**4,
        "content_weight": defaults.content_weight / scale**2,
        "tv_weight": 0.0,
        "feature_units": "raw",
    }


def _baseline_weights(loss: dict[str, Any], layers: int = 5) -> dict[str, float]:
    """The baseline sums its style layers; the engine averages them (equal layer weights summing to 1)."""
    return {"style_weight": loss["style_weight"] / layers, "content_weight": loss["content_weight"]}


def _baseline_net(setup: Setup) -> dict[str, Any]:
    return {"network": setup.weights.network, "convention": setup.weights.convention}


def _net(setup: Setup, layers: tuple[str, ...]) -> VGGFeatures:
    net = VGGFeatures(layers, network=setup.weights.network, convention=setup.weights.convention)
    net.load_features(setup.weights.state)
    return net


def forward_case(setup: Setup, sizes: list[int]) -> list[dict[str, Any]]:
    """Images/s of the feature network (the target pass) per backend and size, checked against torch fp32."""
    cfg = StyleConfig()
    rows: list[dict[str, Any]] = []
    reference = _net(setup, cfg.layers)
    for size in sizes:
        image = images.load(setup.content, size)
        with torch.no_grad():
            expected = reference(image)
        for backend in BACKENDS:
            reason = backend.needs()
            if reason is None and setup.quick and "compile" in backend.name:
                reason = "skipped in --quick (compilation takes minutes on CPU)"
            row: dict[str, Any] = {"backend": backend.name, "size": size, "device": backend.device}
            if reason is not None:
                rows.append(row | {"status": "unavailable", "reason": reason})
                continue
            setup.log(f"forward {backend.name} @ {size}px")
            try:
                rows.append(row | _time_forward(setup, backend, cfg, image, expected))
            except Exception as exc:  # noqa: BLE001 - one backend failing must not end the report
                rows.append(row | {"status": "unavailable", "reason": f"failed: {type(exc).__name__}: {exc}"[:200]})
    return rows


def _time_forward(
    setup: Setup, backend: Any, cfg: StyleConfig, image: torch.Tensor, expected: dict[str, torch.Tensor]
) -> dict[str, Any]:
    forward = backend.make(_net(setup, cfg.layers), setup.model_path)

    def call() -> object:
        return forward(image)

    samples = measure(call, torch.device(backend.device), warmup=2, repeats=3 if setup.quick else 5)
    got = forward(image)
    rel = max(float((got[k].float().cpu() - expected[k]).abs().max() / expected[k].abs().max()) for k in expected)
    stats = summary(samples)
    return {"status": "ok", "seconds": stats, "images_per_s": 1 / stats["median"], "max_rel_diff": rel}


def _engine_objective(setup: Setup, size: int, config: StyleConfig) -> tuple[Objective, torch.Tensor]:
    content, style = _pair(setup, size)
    net = _net(setup, config.layers).to(setup.device)
    with torch.no_grad():
        c_t = content_target(net, content.to(setup.device), config.content_layers)
        s_t = style_target(net, style.to(setup.device), config.style_layers)
    objective = Objective.of(net, c_t, [StyleRegion(s_t)], config).accelerate(setup.device)
    return objective, content.to(setup.device)


#: Steps per timed chunk on CUDA: losses are read back (one host sync) once per chunk, as the engine does.
GPU_CHUNK = 10
#: Time to quality scores the image in fp32 once the engine's own loss is within this fraction of the target.
CHECK_MARGIN = 0.02


def _engine_step_samples(setup: Setup, size: int, config: StyleConfig, samples: int) -> list[float]:
    """Seconds per step: each sample is one chunk of steps timed between two synchronisations, divided by its
    steps. The first chunks (warm-up: cuDNN autotuning, compilation, CUDA-graph capture) are excluded."""
    from nst_engine.optim.graphs import VERIFY_STEPS, WARMUP_STEPS

    objective, content = _engine_objective(setup, size, config)
    gpu = setup.device.type == "cuda"
    chunk = GPU_CHUNK if gpu else 1
    warm_chunks = -(-(WARMUP_STEPS + 2 * VERIFY_STEPS + 2) // chunk) if gpu else 2
    stamps: list[float] = []

    def on_step(step: Any, image: Any) -> None:
        if step.step % chunk == 0:
            sync(setup.device)
            stamps.append(time.perf_counter())

    start = time.perf_counter()
    optimize(
        objective,
        content,
        steps=chunk * (warm_chunks + samples),
        optimizer=config.optimizer,
        lr=config.learning_rate,
        history=config.lbfgs_history,
        callback=on_step,
        sync_every=chunk,
        cuda_graph=config.cuda_graph if gpu else "off",
    )
    edges = [start, *stamps]
    return [(b - a) / chunk for a, b in itertools.pairwise(edges)][warm_chunks:]


def _baseline_step_samples(setup: Setup, size: int, evaluations: int) -> list[float]:
    """One sample per closure evaluation: the time from one evaluation's start to the next's, so torch's
    L-BFGS update between them is included (one LBFGS.step call runs up to 20 evaluations)."""
    content, style = _pair(setup, size)
    run = baseline.Baseline(setup.weights.state, content, style, setup.device, **_baseline_net(setup))
    run.run(2)  # warm-up
    starts: list[float] = []

    def timed_closure() -> torch.Tensor:
        sync(setup.device)
        starts.append(time.perf_counter())
        return run.closure()

    while len(starts) <= evaluations:
        run.optimizer.step(timed_closure)
    return [b - a for a, b in itertools.pairwise(starts)][:evaluations]


def step_configs(device: torch.device) -> dict[str, dict[str, Any]]:
    """The engine configurations benchmarked on this device (the first is the default)."""
    if device.type == "cuda":
        eager = {"cuda_graph": "off"}
        return {
            "engine default (fp32, channels_last, cuda graph)": {},
            "engine fp32 eager": {"precision": "fp32", "channels_last": False, **eager},
            "engine tf32 eager": {"precision": "tf32", "channels_last": False, **eager},
            "engine bf16 + channels_last eager": {"precision": "bf16", "channels_last": True, **eager},
            "engine tf32 + channels_last + cuda graph": {"precision": "tf32", "channels_last": True},
            "engine bf16 + channels_last + cuda graph": {"precision": "bf16", "channels_last": True},
            "engine bf16 + channels_last + compile + cuda graph": {
                "precision": "bf16",
                "channels_last": True,
                "compile": True,
            },
        }
    configs: dict[str, dict[str, Any]] = {
        "engine default (fp32, channels_last)": {},
        "engine fp32 NCHW": {"channels_last": False},
    }
    if cpu_has_bf16():  # AVX-512 BF16 (Zen 4, Sapphire Rapids): oneDNN runs bf16 convolutions natively
        configs["engine bf16 + channels_last"] = {"precision": "bf16"}
    return configs


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic (without it, bf16 autocast was measured about 50x slower)."""
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(probe()) if probe is not None else False


#: Rounds per size in the step case (quick, full): every configuration is timed once per round and the order
#: reverses each round, so drift on a shared machine (a neighbour's load, clock changes) lands on every
#: configuration alike instead of on whichever was timed last.
STEP_ROUNDS = (2, 3)
#: Timed steps per configuration per round (quick, full).
STEP_SAMPLES = (3, 4)


def step_case(setup: Setup, sizes: list[int]) -> list[dict[str, Any]]:
    """ms/step and peak memory for the engine's configurations and the textbook baseline, interleaved in rounds."""
    rows: list[dict[str, Any]] = []
    rounds = STEP_ROUNDS[0 if setup.quick else 1]
    steps = STEP_SAMPLES[0 if setup.quick else 1]
    base_name = "baseline (PyTorch tutorial, torch LBFGS)"
    configs: dict[str, dict[str, Any] | None] = {base_name: None, **step_configs(setup.device)}
    for size in sizes:
        samples: dict[str, list[float]] = {name: [] for name in configs}
        peaks: dict[str, float | None] = dict.fromkeys(configs)
        order = list(configs)
        for r in range(rounds):
            for name in order if r % 2 == 0 else order[::-1]:
                settings = configs[name]
                reset_peak_memory(setup.device)
                setup.log(f"step {name} @ {size}px, round {r + 1}/{rounds}")
                if settings is None:
                    samples[name] += _baseline_step_samples(setup, size, steps)
                else:
                    config = StyleConfig(size=size, device=_device(setup), **{**SAME_LOSS, **settings})
                    samples[name] += _engine_step_samples(setup, size, config, steps)
                peak = peak_memory_mib(setup.device)
                if peak is not None:
                    peaks[name] = max(peaks[name] or 0.0, peak)
        base = summary(samples[base_name])
        for name in configs:
            stats = summary(samples[name])
            rows.append(
                {
                    "config": name,
                    "size": size,
                    "seconds": stats,
                    "rounds": rounds,
                    "peak_mib": peaks[name],
                    "ratio": base["median"] / stats["median"],
                }
            )
    return rows


def fastest_config(device: torch.device, step_rows: list[dict[str, Any]], size: int) -> str:
    """The engine configuration with the best measured step at ``size`` (the default one if none was measured)."""
    configs = step_configs(device)
    measured = [r for r in step_rows if r["size"] == size and r["config"] in configs]
    return max(measured, key=lambda r: r["ratio"])["config"] if measured else next(iter(configs))


def ttq_case(setup: Setup, size: int, evaluations: int, config_name: str | None = None) -> list[dict[str, Any]]:
    """Wall time for the engine (configuration ``config_name``, the default if None) to reach the loss the
    baseline reaches after ``evaluations`` L-BFGS evaluations; both losses evaluated the same way in fp32."""
    name = config_name or next(iter(step_configs(setup.device)))
    settings = step_configs(setup.device)[name]
    loss_settings = same_loss(setup)
    config = StyleConfig(size=size, device=_device(setup), **{**loss_settings, **settings})
    gpu = setup.device.type == "cuda"
    evaluator, content = _engine_objective(
        setup, size, config.replace(channels_last=False, precision="fp32", compile=False)
    )

    def loss_of(image: torch.Tensor) -> float:
        with torch.no_grad():
            return float(evaluator(image.to(setup.device))["total"])

    base, base_time, target = _baseline_target(setup, size, evaluations, loss_settings, loss_of)
    setup.log(f"time to quality: engine until loss <= {target:.4g}")
    objective, content = _engine_objective(setup, size, config)
    reached: dict[str, float] = {}
    seen = {"steps": 0, "best": float("inf"), "checks": 0, "paused": 0.0}
    start = time.perf_counter()

    def on_step(step: Any, image: Any) -> None:
        # The engine's own loss (its precision and layout) only says when to look: the image itself is then
        # scored like the baseline's, and the time spent scoring is left out of the engine's clock. On CUDA the
        # image is the newest one queued, so the time (taken after it) is its time; the step count is the step
        # whose loss prompted the check.
        seen.update(steps=step.step, best=min(seen["best"], step.losses["total"]))
        if "time" in reached or step.losses["total"] > target * (1 + CHECK_MARGIN):
            return
        sync(setup.device)
        paused_at = time.perf_counter()
        loss = loss_of(image())
        if loss <= target:
            reached.update(time=paused_at - start - seen["paused"], step=step.step, loss=loss)
        seen["checks"] += 1
        seen["paused"] += time.perf_counter() - paused_at

    optimize(
        objective,
        content,
        steps=3 * evaluations,
        optimizer="lbfgs",
        lr=1.0,
        history=config.lbfgs_history,
        callback=on_step,
        # Past 1.5x the baseline's time the goal (2x less time) is long lost: stop rather than run 3x the steps.
        should_stop=lambda: "time" in reached or time.perf_counter() - start - seen["paused"] > TTQ_CAP * base_time,
        sync_every=GPU_CHUNK if gpu else 1,
        cuda_graph=config.cuda_graph if gpu else "off",
    )
    common = {
        "size": size,
        "baseline_evaluations": base.evaluations,
        "baseline_seconds": base_time,
        "target_loss": target,
    }
    rows = [
        {
            **common,
            "config": name,
            "engine_seconds": reached.get("time"),
            "engine_steps": reached.get("step"),
            "engine_steps_run": seen["steps"],
            "engine_best_loss": seen["best"],
            "engine_loss": reached.get("loss"),
            "engine_checks": seen["checks"],
            "engine_seconds_run": time.perf_counter() - start - seen["paused"],
            "speedup": base_time / reached["time"] if "time" in reached else None,
        }
    ]
    if setup.extra.get("ttq_scales", 1) > 1:
        rows.append(_ttq_coarse_to_fine(setup, config, name, setup.extra["ttq_scales"], target, base_time, common))
    return rows


def _baseline_target(setup: Setup, size: int, evaluations: int, loss_settings: dict[str, Any],
                     loss_of: Callable[[torch.Tensor], float]) -> tuple[baseline.Baseline, float, float]:  # fmt: skip
    """The baseline's run: the baseline, its seconds, and its image's loss (the engine's target)."""
    c, s = _pair(setup, size)
    setup.log(
        f"time to quality: baseline, {evaluations} evaluations asked (torch's LBFGS ends its last step) @ {size}px"
    )
    start = time.perf_counter()
    weights = _baseline_weights(loss_settings)
    base = baseline.Baseline(
        setup.weights.state,
        c,
        s,
        setup.device,
        style_weight=weights["style_weight"],
        content_weight=weights["content_weight"],
        **_baseline_net(setup),
    )
    base_image = base.run(evaluations)
    sync(setup.device)
    return base, time.perf_counter() - start, loss_of(base_image)


#: The time-to-quality engine runs stop at this multiple of the baseline's time.
TTQ_CAP = 1.5


def _ttq_coarse_to_fine(
    setup: Setup, config: StyleConfig, name: str, scales: int, target: float, base_time: float, common: dict[str, Any]
) -> dict[str, Any]:
    """The same race with coarse to fine (half the final steps at each coarser scale): the clock includes the
    coarse scales; images are scored (off the clock) only at the final scale."""
    from nst_engine.stylize import stylize
    from nst_engine.targets import DirectTargets

    evaluator, _ = _engine_objective(setup, config.size, config.replace(channels_last=False, compile=False))
    content, style = _pair(setup, config.size)
    net = _net(setup, config.layers).to(setup.device)
    encoder = DirectTargets(lambda x: {k: v.detach() for k, v in net(x).items()})
    multi = config.replace(scales=scales, steps=3 * common["baseline_evaluations"], scale_steps=50)
    reached: dict[str, float] = {}
    seen = {"steps": 0, "best": float("inf"), "paused": 0.0}
    setup.log(f"time to quality: engine, {scales} scales, until loss <= {target:.4g}")
    start = time.perf_counter()

    def on_step(step: Any, image: Any) -> None:
        if step.scale != scales - 1 or "time" in reached:
            return
        seen.update(steps=step.step, best=min(seen["best"], step.losses["total"]))
        if step.losses["total"] > target * (1 + CHECK_MARGIN):
            return
        paused_at = time.perf_counter()
        with torch.no_grad():
            loss = float(evaluator(image().to(setup.device))["total"])
        if loss <= target:
            reached.update(time=paused_at - start - seen["paused"], step=step.step, loss=loss)
        seen["paused"] += time.perf_counter() - paused_at

    stylize(
        content,
        [style],
        config=multi,
        net=net,
        targets=encoder,
        callback=on_step,
        should_stop=lambda: "time" in reached or time.perf_counter() - start - seen["paused"] > TTQ_CAP * base_time,
    )
    return {
        **common,
        "config": f"{name}, {scales} scales (50 steps each coarser)",
        "engine_seconds": reached.get("time"),
        "engine_steps": reached.get("step"),
        "engine_steps_run": seen["steps"],
        "engine_best_loss": seen["best"],
        "engine_loss": reached.get("loss"),
        "engine_checks": 0,
        "engine_seconds_run": time.perf_counter() - start - seen["paused"],
        "speedup": base_time / reached["time"] if "time" in reached else None,
    }


def _batch_images(setup: Setup, count: int, size: int) -> list[torch.Tensor]:
    """``count`` distinct content images: crops and flips of the sample photo."""
    photo = images.load(setup.content, size * 2)
    out = []
    for i in range(count):
        h, w = photo.shape[-2:]
        top, left = (i * 37) % (h // 3), (i * 53) % (w // 3)
        crop = photo[..., top : top + 2 * h // 3, left : left + 2 * w // 3]
        crop = torch.flip(crop, dims=[-1]) if i % 2 else crop
        out.append(resize_long(crop, size))
    return out


def cache_case(setup: Setup, size: int, count: int = 8) -> list[dict[str, Any]]:
    """Time spent on targets per image for a batch in one style: cold cache, then warm (a second process)."""
    import tempfile

    from nst_engine.cache import CachedTargets, TargetCache
    from nst_engine.export.model_file import inspect
    from nst_engine.export.runtime import OnnxEncoder
    from nst_engine.stylize import stylize

    info = inspect(setup.model_path)
    config = StyleConfig(size=size, steps=1)
    contents, style = _batch_images(setup, count, size), images.load(setup.style, size)
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for label in ("cold cache", "warm cache"):
            encoder = OnnxEncoder(setup.model_path, "cpu")
            targets = CachedTargets(encoder, TargetCache(Path(root)), info.sha256, "cpu", "fp32", info.pooling)
            setup.log(f"cache batch: {label}")
            for content in contents:
                stylize(content, [style], config=config, net=info.torch_module(config.layers), targets=targets)
            seconds = [r.seconds for r in targets.records]
            rows.append(
                {
                    "run": label,
                    "images": count,
                    "size": size,
                    "target_seconds_per_image": sum(seconds) / count,
                    "forward_passes": encoder.forward_count,
                    "hits": sum(r.cache in ("hit", "memory") for r in targets.records),
                }
            )
    return rows


def multiscale_case(setup: Setup, size: int, steps: int) -> list[dict[str, Any]]:
    """Wall time to the single-scale run's final loss at ``size``: single scale vs coarse to fine (3 scales)."""
    from nst_engine.stylize import stylize
    from nst_engine.targets import DirectTargets

    content, style = _pair(setup, size)
    net = _net(setup, StyleConfig().layers)
    encoder = DirectTargets(lambda x: {k: v.detach() for k, v in net(x).items()})
    results: dict[str, Any] = {}
    setup.log(f"multi-scale: single scale, {steps} steps @ {size}px")
    single_cfg = StyleConfig(size=size, steps=steps)
    start = time.perf_counter()
    single = stylize(content, [style], config=single_cfg, net=net, targets=encoder)
    results["single_seconds"] = time.perf_counter() - start
    target = single.steps[-1].losses["total"]
    multi_cfg = single_cfg.replace(scales=3, scale_steps=steps // 2, steps=3 * steps)
    reached: dict[str, float] = {}
    setup.log(f"multi-scale: 3 scales until loss <= {target:.4g}")
    start = time.perf_counter()

    def on_step(step: Any, image: Any) -> None:
        if step.scale == 2 and "time" not in reached and step.losses["total"] <= target:
            reached.update(time=time.perf_counter() - start, step=step.step)

    stylize(
        content,
        [style],
        config=multi_cfg,
        net=net,
        targets=encoder,
        callback=on_step,
        should_stop=lambda: "time" in reached,
    )
    return [
        {
            "size": size,
            "single_steps": steps,
            "single_seconds": results["single_seconds"],
            "target_loss": target,
            "multi_seconds": reached.get("time"),
            "multi_final_scale_steps": reached.get("step"),
            "speedup": results["single_seconds"] / reached["time"] if "time" in reached else None,
        }
    ]
