"""Take the convolutions of a plain VGG16 or VGG19 stack out of any ONNX graph (a Keras or PyTorch export, a
classifier with its head, an nst-engine export), checking that it is one.

Only the ``onnx`` protobuf library is used: nothing is run, and no file besides the model is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
from onnx import numpy_helper

from nst_engine.errors import WeightsError
from nst_engine.layers import Network, conv_indices, conv_shapes, layer_names, network_with_convs
from nst_engine.vgg import CONVENTIONS, Convention

#: Ops allowed between the graph's input and the first convolution (a layout change, nothing that changes values).
_PASS_THROUGH = {"Transpose", "Identity"}
#: Metadata keys of nst-engine's exports start with this (export/onnx_export.py writes them).
META_PREFIX = "nst_engine."


@dataclass(frozen=True)
class FoundVGG:
    state: dict[str, torch.Tensor]
    network: Network
    convention: Convention
    note: str


def _fail(path: Path, why: str) -> WeightsError:
    return WeightsError(f"'{path}' is not a plain VGG16 or VGG19 graph: {why}")


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def read_onnx_vgg(path: Path, convention: Convention | None = None) -> FoundVGG:
    """The 13 or 16 convolutions of ``path`` in torchvision format; ``convention`` or the file's metadata says
    what input they expect."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise WeightsError(f"'{path}' does not parse as ONNX ({type(exc).__name__}); pass an .onnx model file") from exc
    graph = model.graph
    tensors = {i.name: i for i in graph.initializer}
    if any(i.data_location == onnx.TensorProto.EXTERNAL for i in graph.initializer):
        raise _fail(path, "it keeps tensors in external files; save it as a single file")
    producer = {out: node for node in graph.node for out in node.output}
    relu_of = {n.input[0]: n for n in graph.node if n.op_type == "Relu"}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    network = network_with_convs(len(convs))
    meta = {p.key[len(META_PREFIX) :]: p.value for p in model.metadata_props if p.key.startswith(META_PREFIX)}
    if network is None and "layers" in meta:
        raise WeightsError(
            f"'{path}' is an nst-engine export cut after {meta['layers'].split(',')[-1]} ({len(convs)} convolutions); "
            "pass it as --model, or export one with --style-layers ...,relu5_3 to use it as --weights"
        )
    if network is None:
        ops = sorted({n.op_type for n in graph.node})
        raise _fail(path, f"it has {len(convs)} Conv nodes (VGG16 has 13, VGG19 16); ops found: {', '.join(ops[:12])}")
    names = layer_names(network)
    state: dict[str, torch.Tensor] = {}
    previous: str | None = None
    for index, node, (cin, cout) in zip(conv_indices(network), convs, conv_shapes(network).values(), strict=True):
        where = f"Conv node {node.name or index} ({names[index]})"
        attrs = _attrs(node)
        if (
            list(attrs.get("kernel_shape", [3, 3])) != [3, 3]  # type: ignore[call-overload]
            or list(attrs.get("strides", [1, 1])) != [1, 1]  # type: ignore[call-overload]
            or list(attrs.get("pads", [1, 1, 1, 1])) != [1, 1, 1, 1]  # type: ignore[call-overload]
            or attrs.get("group", 1) != 1
            or list(attrs.get("dilations", [1, 1])) != [1, 1]  # type: ignore[call-overload]
        ):
            raise _fail(path, f"{where} is not a 3x3, stride 1, pad 1 convolution ({attrs})")
        if node.input[1] not in tensors:
            raise _fail(path, f"{where} takes its weight from a computed value, not a stored tensor")
        weight = torch.from_numpy(numpy_helper.to_array(tensors[node.input[1]]).astype("float32"))
        if tuple(weight.shape) != (cout, cin, 3, 3):
            needs = (cout, cin, 3, 3)
            raise _fail(path, f"{where} has weight shape {tuple(weight.shape)}, {network.upper()} needs {needs}")
        if len(node.input) > 2 and node.input[2]:
            if node.input[2] not in tensors:
                raise _fail(path, f"{where} takes its bias from a computed value, not a stored tensor")
            bias = torch.from_numpy(numpy_helper.to_array(tensors[node.input[2]]).astype("float32")).reshape(-1)
        else:
            bias = torch.zeros(cout)
        if tuple(bias.shape) != (cout,):
            raise _fail(path, f"{where} has bias shape {tuple(bias.shape)}, needs ({cout},)")
        if previous is not None or "input_convention" not in meta:  # an nst-engine export preprocesses itself
            _check_input(path, where, node.input[0], previous, producer, pooled=names[index - 1].startswith("pool"))
        relu = relu_of.get(node.output[0])
        if relu is None:
            raise _fail(path, f"{where} is not followed by a Relu")
        previous = relu.output[0]
        state[f"features.{index}.weight"], state[f"features.{index}.bias"] = weight.contiguous(), bias.contiguous()
    if convention is None:
        recorded = meta.get("input_convention")
        if recorded not in CONVENTIONS:
            raise WeightsError(
                f"'{path}' does not say which input its weights expect; pass --input-convention caffe (BGR, 0-255, "
                "mean-subtracted: Caffe and Keras VGGs) or --input-convention torchvision (torchvision's VGGs)"
            )
        convention = recorded
    assert convention is not None
    note = f"{network.upper()} convolutions read from the ONNX graph {path.name}"
    return FoundVGG(state, network, convention, note)


def _check_input(
    path: Path, where: str, name: str, previous: str | None, producer: dict[str, onnx.NodeProto], pooled: bool
) -> None:
    """The first convolution reads the graph input (through a layout change at most); each later one reads the
    previous ReLU, through one max pool at a block boundary."""
    node = producer.get(name)
    if previous is None:
        while node is not None:
            if node.op_type not in _PASS_THROUGH:
                raise _fail(
                    path,
                    f"the first convolution's input passes through {node.op_type}; only a leading NHWC Transpose "
                    "is allowed (preprocessing inside the graph would be applied twice)",
                )
            node = producer.get(node.input[0])
        return
    if pooled:
        if node is None or node.op_type not in ("MaxPool", "AveragePool"):
            raise _fail(path, f"{where} does not follow a pooling layer where VGG has one")
        node_input = node.input[0]
    else:
        node_input = name
    if node_input != previous:
        raise _fail(path, f"{where} does not read the previous convolution's ReLU (the layers are not a plain stack)")
