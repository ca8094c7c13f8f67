"""The benchmark's pieces: the baseline computes the same loss as the engine, reports list every backend."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from nst_engine.bench import baseline, report
from nst_engine.bench.backends import BACKENDS
from nst_engine.bench.cases import SAME_LOSS
from nst_engine.config import StyleConfig
from nst_engine.objective import Objective
from nst_engine.targets import StyleRegion, content_target, style_target
from nst_engine.vgg import VGGFeatures
from tests.conftest import gradient_image


def test_baseline_loss_equals_the_engine_loss_it_is_compared_with(weights) -> None:  # type: ignore[no-untyped-def]
    content, image = gradient_image(48, 64, 1), gradient_image(48, 64, 3)
    style = baseline.same_size(gradient_image(64, 64, 2), content)
    model, style_losses, content_losses = baseline.build(weights.state, style, content, torch.device("cpu"))
    with torch.no_grad():
        model(image)
    theirs = float(sum(s.loss for s in style_losses) * 1e6 + sum(c.loss for c in content_losses))
    config = StyleConfig(**SAME_LOSS)
    net = VGGFeatures(config.layers)
    net.load_features(weights.state)
    with torch.no_grad():
        objective = Objective.of(
            net,
            content_target(net, content, config.content_layers),
            [StyleRegion(style_target(net, style, config.style_layers))],
            config,
        )
        ours = float(objective(image)["total"])
    assert abs(ours - theirs) <= 1e-4 * abs(theirs), (ours, theirs)
    assert len(style_losses) == 5 and len(content_losses) == 1


def test_unavailable_backends_say_why(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime as ort

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    reasons = {b.name: b.needs() for b in BACKENDS}
    assert reasons["ONNX Runtime CPU"] is None
    gpu = [b for b in BACKENDS if b.device == "cuda"]
    assert gpu and all(reasons[b.name] for b in gpu)  # every GPU backend names why it cannot run here
    assert "onnxruntime-gpu" in str(reasons["ONNX Runtime CUDA"]) and "no CUDA device" in str(
        reasons["torch CUDA bf16"]
    )
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert next(b for b in BACKENDS if b.name == "ONNX Runtime CUDA").needs() is None


def _env() -> dict[str, Any]:
    return {
        "date": "d",
        "nst_engine": "0",
        "git_commit": "abc",
        "cpu": "CPU",
        "cores": 2,
        "torch_threads": 2,
        "gpu": {"name": None, "reason": "none here"},
        "torch": "t",
        "onnxruntime": "o",
        "onnx": "x",
        "python": "p",
        "providers": ["CPUExecutionProvider"],
        "weights": "random:0 (not pretrained)",
    }


def test_report_lists_unavailable_backends_and_keeps_samples(tmp_path: Path) -> None:
    env = _env()
    stats = {"median": 0.5, "p10": 0.4, "p90": 0.6, "min": 0.4, "max": 0.6, "n": 3, "samples": [0.4, 0.5, 0.6]}
    results = {
        "forward": [
            {
                "backend": "ONNX Runtime CPU",
                "size": 256,
                "device": "cpu",
                "status": "ok",
                "seconds": stats,
                "images_per_s": 2.0,
                "max_rel_diff": 1e-6,
            },
            {
                "backend": "ONNX Runtime CUDA",
                "size": 256,
                "device": "cuda",
                "status": "unavailable",
                "reason": "no GPU",
            },
        ]
    }
    report.write(tmp_path, env, results, quick=True)
    text = (tmp_path / "report.md").read_text()
    assert "| ONNX Runtime CUDA | 256 | unavailable | no GPU |" in text and "not pretrained" in text
    assert json.loads((tmp_path / "results.json").read_text())["results"]["forward"][0]["seconds"]["samples"] == [
        0.4,
        0.5,
        0.6,
    ]


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (
            {"engine_seconds": 90.0, "engine_steps": 120, "speedup": 2.0, "engine_loss": 0.01897},
            "reached it in 90.0 s (120 steps, 2.00x), its image scoring 0.01897",
        ),
        (
            {"engine_seconds": None, "engine_steps_run": 900, "engine_best_loss": 0.0213, "engine_seconds_run": 1800.0},
            "did not reach it in 900 steps (runs stop at 3x the baseline's evaluations or 1.5x its time); "
            "its best loss was 0.0213, after 1800.0 s",
        ),
    ],
)
def test_time_to_quality_sentence_says_how_far_the_engine_got(
    tmp_path: Path, row: dict[str, object], expected: str
) -> None:
    base = {"size": 512, "config": "engine default", "baseline_evaluations": 300, "baseline_seconds": 600.0}
    report.write(tmp_path, _env(), {"ttq": [{**base, "target_loss": 0.019, **row}]}, quick=False)
    text = (tmp_path / "report.md").read_text()
    assert expected in text and "reached it in not" not in text


def test_bench_command_writes_a_report(tmp_path: Path, shared_images: Path) -> None:
    from nst_engine.cli import app

    result = CliRunner().invoke(
        app,
        [
            "bench",
            "--quick",
            "--case",
            "cache",
            "--out",
            str(tmp_path / "r"),
            "--content",
            str(shared_images / "content_turtle.jpg"),
            "--style",
            str(shared_images / "style_great_wave.jpg"),
        ],
    )
    assert result.exit_code == 0, result.output
    text = (tmp_path / "r" / "report.md").read_text()
    assert "CPU:" in text and "| warm cache | 8 | 128 |" in text
    data = json.loads((tmp_path / "r" / "results.json").read_text())
    cold, warm = data["results"]["cache"]
    assert cold["forward_passes"] == 9 and warm["forward_passes"] == 0


def _quick_cpu_setup(weights, shared_images: Path, log=lambda *_: None):  # type: ignore[no-untyped-def]
    """A quick CPU bench setup on the shared turtle + great wave pair."""
    from nst_engine.bench import cases

    return cases.Setup(
        weights=weights,
        model_path=Path("unused"),
        content=shared_images / "content_turtle.jpg",
        style=shared_images / "style_great_wave.jpg",
        quick=True,
        device=torch.device("cpu"),
        log=log,
    )


def test_time_to_quality_scores_the_engine_image_like_the_baseline(weights, shared_images: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from nst_engine.bench import cases

    # The time cap is for benchmarks; here only the step budget stops a run, so a loaded machine cannot fail it.
    monkeypatch.setattr(cases, "TTQ_CAP", float("inf"))
    setup = _quick_cpu_setup(weights, shared_images)
    (row,) = cases.ttq_case(setup, 48, 10)
    assert row["baseline_evaluations"] >= 10 and row["engine_checks"] >= 1
    # Reached means the image itself scored at or below the target in fp32, not only the engine's own loss.
    assert row["engine_seconds"] is not None and row["engine_loss"] <= row["target_loss"]
    assert row["engine_seconds"] <= row["engine_seconds_run"] and row["speedup"] > 0


def test_step_case_interleaves_configurations_in_rounds(weights, shared_images: Path) -> None:  # type: ignore[no-untyped-def]
    from nst_engine.bench import cases

    logged: list[str] = []
    setup = _quick_cpu_setup(weights, shared_images, logged.append)
    rows = cases.step_case(setup, [48])
    rounds, per_round = cases.STEP_ROUNDS[0], cases.STEP_SAMPLES[0]
    names = [r["config"] for r in rows]
    assert names[0].startswith("baseline") and names[1:] == list(cases.step_configs(torch.device("cpu")))
    for row in rows:
        assert row["seconds"]["n"] == rounds * per_round and row["rounds"] == rounds
        assert all(s > 0 for s in row["seconds"]["samples"])
    # The second round runs the configurations in reverse, so no configuration is always timed last.
    order = [line.split(" @ ")[0].removeprefix("step ") for line in logged]
    assert order[: len(names)] == names and order[len(names) : 2 * len(names)] == names[::-1]
    assert rows[0]["ratio"] == 1.0
    assert f"{rounds} interleaved rounds" in report._rounds_line(rows)[0]


def test_every_case_gets_a_chart_and_times_get_error_bars(tmp_path: Path) -> None:
    from nst_engine.bench.report import charts

    stats = {"median": 0.5, "p10": 0.4, "p90": 0.7, "n": 3, "min": 0.4, "max": 0.7, "samples": [0.4, 0.5, 0.7]}
    results = {
        "forward": [{"backend": "b", "size": 64, "status": "ok", "seconds": stats, "images_per_s": 2.0}],
        "step": [{"config": "c", "size": 64, "seconds": stats}],
        "ttq": [{"size": 64, "baseline_seconds": 3.0, "engine_seconds": None}],
        "cache": [{"run": "cold cache", "size": 64, "target_seconds_per_image": 0.3}],
        "multiscale": [{"size": 64, "single_seconds": 5.0, "multi_seconds": 4.0}],
    }
    written = charts(results, tmp_path)
    assert written == ["forward.png", "step.png", "time_to_quality.png", "cache.png", "coarse_to_fine.png"]
    assert all((tmp_path / name).stat().st_size > 1000 for name in written)


def test_the_profile_counts_vgg16s_convolution_arithmetic_and_groups_operators() -> None:
    from nst_engine.bench.profile import _group, conv_flops, profile_markdown

    # VGG16's thirteen convolutions at 224 px: 15.35 G multiply-adds, the figure the architecture is known by.
    assert conv_flops(224, 224, "vgg16", "relu5_3") == pytest.approx(2 * 15.35e9, rel=0.01)
    assert conv_flops(224, 224, "vgg16", "relu5_1") < conv_flops(224, 224, "vgg16", "relu5_3")
    assert _group("aten::mkldnn_convolution") == "convolution"
    assert _group("aten::convolution_backward") == "convolution"
    assert _group("aten::max_pool2d_with_indices_backward") == "relu_and_pooling"
    assert _group("aten::bmm") == "statistics_and_losses" and _group("aten::copy_") == "other"
    row = {"size": 64, "hw": [48, 64], "precision": "bf16", "step_s": 0.1, "objective_s": 0.08,
           "optimizer_and_loop_s": 0.02, "shares_of_objective": {"convolution": 0.7, "other": 0.3},
           "conv_gflops_per_step": 1.0, "gemm_gflops": 100.0, "conv_efficiency": 0.1}  # fmt: skip
    assert "| 64x48 | bf16 | 100 | 80 | 20 | 70% | 0% | 0% | 30% | 1.0 | 100 | 10% |" in profile_markdown([row])


def test_the_print_case_reports_each_scale_and_the_reference_at_half_the_size() -> None:
    from nst_engine.bench.printsize import print_markdown

    rows = [
        {"run": "default", "size": 2048, "pair": "tubingen+starry_night", "seconds": 1500.0,
         "scales": [[384, 512], [768, 1024], [1536, 2048]], "steps": [500, 128, 32], "scale_seconds": [400, 500, 600],
         "loss": 0.05, "other_sw": 0.2, "lab_w1": 1.5, "fine_detail": 0.9},
        {"run": "at 1024 px: reference", "size": 1024, "pair": "tubingen+starry_night", "loss": 0.04,
         "other_sw": 0.25, "lab_w1": 2.0, "fine_detail": 0.8},
    ]  # fmt: skip
    text = "\n".join(print_markdown(rows))
    assert (
        "| default | 512, 1024, 2048 | 500, 128, 32 | 400, 500, 600 | 25.0 min | 0.05 | 0.200 | 1.50 | 0.90 |" in text
    )
    assert "| at 1024 px: reference | 0.04 | 0.250 | 2.00 | 0.80 |" in text


def test_print_crops_show_each_picture_whole_above_its_centre_at_full_size(tmp_path: Path) -> None:
    from nst_engine import images
    from nst_engine.bench.printsize import save_crops

    left, right = torch.zeros(1, 3, 600, 800), torch.ones(1, 3, 600, 800)
    save_crops([left, right], tmp_path / "crops.png", side=256)
    panel = images.load(tmp_path / "crops.png")
    assert tuple(panel.shape[-2:]) == (512, 512)  # two columns of 256, each the whole above the crop
    assert float(panel[..., 300:, :256].mean()) == 0.0 and float(panel[..., 300:, 256:].mean()) == 1.0
