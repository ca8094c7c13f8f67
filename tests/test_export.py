"""The exported ONNX model: structure, metadata, agreement with torch, and refusal of damaged files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import nst_engine
from nst_engine.errors import ExportValidationError, ModelError
from nst_engine.export.model_file import inspect
from nst_engine.export.onnx_export import build_net
from nst_engine.export.runtime import OnnxEncoder
from nst_engine.export.validate import validate
from nst_engine.weights import Weights
from tests.conftest import LAYERS, gradient_image


def test_graph_structure_and_metadata(model_path: Path, weights: Weights) -> None:
    model = onnx.load(str(model_path))
    onnx.checker.check_model(model)
    assert model.opset_import[0].version >= 17
    (image,) = model.graph.input
    dims = image.type.tensor_type.shape.dim
    assert image.name == "image" and dims[1].dim_value == 3
    assert all(d.dim_param for d in (dims[0], dims[2], dims[3])), "batch, height and width must be dynamic"
    assert [o.name for o in model.graph.output] == ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2", "relu5_1"]
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["nst_engine.layers"] == "relu1_1,relu2_1,relu3_1,relu4_1,relu4_2,relu5_1"
    assert meta["nst_engine.pooling"] == "max"
    assert meta["nst_engine.weights"] == "random" and meta["nst_engine.pretrained"] == "false"
    assert "not pretrained" in meta["nst_engine.weights_label"]
    assert meta["nst_engine.weights_sha256"] == weights.sha256
    assert meta["nst_engine.engine_version"] == nst_engine.__version__
    # Truncated after relu5_1: conv5_2 (features.30) and later are not in the file.
    assert sum(node.op_type == "Conv" for node in model.graph.node) == 13


def test_onnx_runtime_matches_torch_within_1e4(model_path: Path, weights: Weights) -> None:
    net = build_net(weights, LAYERS, "max")
    encoder = OnnxEncoder(model_path, provider="cpu")
    for shape in ((1, 3, 64, 96), (2, 3, 50, 37)):  # odd sizes and a batch of two
        image = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            expected = net(image)
        got = encoder(image)
        for layer in LAYERS:
            ref = expected[layer].numpy()
            rel = np.abs(got[layer].numpy() - ref).max() / np.abs(ref).max()
            assert rel < 1e-4, f"{layer} {shape}: relative difference {rel:.2e}"


def test_torch_module_loads_the_same_weights_from_the_file(model_info, weights: Weights) -> None:  # type: ignore[no-untyped-def]
    net = model_info.torch_module()
    for key, value in net.state_features().items():
        torch.testing.assert_close(value, weights.state[key], rtol=0, atol=0)
    features = net(gradient_image(32, 32))
    assert set(features) == set(LAYERS)


def _tamper(source: Path, target: Path) -> None:
    model = onnx.load(str(source))
    for init in model.graph.initializer:
        if init.name == "features.10.weight":  # conv3_1
            array = numpy_helper.to_array(init).copy()
            array[0] += 0.5
            init.CopyFrom(numpy_helper.from_array(array, init.name))
    onnx.save(model, str(target))


def test_tampered_model_fails_validation(model_path: Path, weights: Weights, tmp_path: Path) -> None:
    tampered = tmp_path / "tampered.onnx"
    _tamper(model_path, tampered)
    net = build_net(weights, LAYERS, "max")
    assert max(c.max_rel for c in validate(model_path, net)) < 1e-4
    with pytest.raises(ExportValidationError) as info:
        validate(tampered, net)
    assert info.value.max_rel > 1e-4 and "disagrees with torch" in str(info.value)


def test_inspect_rejects_files_that_do_not_fit(model_path: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01 not protobuf" * 10)
    with pytest.raises(ModelError, match="does not parse as ONNX"):
        inspect(junk)
    with pytest.raises(ModelError, match="not found"):
        inspect(tmp_path / "missing.onnx")
    model = onnx.load(str(model_path))
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    with pytest.raises(ModelError, match="metadata lacks"):
        inspect(bare)
    model = onnx.load(str(model_path))
    for prop in model.metadata_props:
        if prop.key == "nst_engine.layers":
            prop.value = "relu1_1,relu2_1,relu3_1,relu4_1,relu4_2,relu9_9"
    wrong = tmp_path / "wrong-layers.onnx"
    onnx.save(model, str(wrong))
    with pytest.raises(ModelError, match="unknown layer"):
        inspect(wrong)


def test_model_without_a_requested_layer_is_refused(model_info) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ModelError, match="no output for conv2_2"):
        model_info.require(("relu1_1", "conv2_2"))


def test_export_failure_leaves_no_file(weights: Weights, tmp_path: Path) -> None:
    from nst_engine.export.onnx_export import export

    target = tmp_path / "m.onnx"
    with pytest.raises(ExportValidationError):
        export(weights, target, ("relu1_1",), "max", tolerance=-1.0)  # nothing can pass a negative tolerance
    assert not list(tmp_path.iterdir())
