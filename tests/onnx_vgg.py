"""Builds ONNX graphs shaped like other people's VGG exports (a Keras classifier: NHWC input, one Transpose, the
convolutions with ReLUs and max pools, a dense head), with weights the tests choose, to read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from nst_engine.layers import conv_indices, layer_names


def keras_like_vgg(
    path: Path,
    state: dict[str, torch.Tensor],
    network: str = "vgg16",
    side: int = 64,
    preprocess: bool = False,
    drop_convs: int = 0,
) -> list[str]:
    """Write the graph; returns the names of its ReLU outputs, in order (conv1_1's first).

    ``preprocess`` puts a Sub before the first convolution (not allowed); ``drop_convs`` leaves out the last
    convolutions (no longer a VGG)."""
    nodes = [helper.make_node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2], name="to_nchw")]
    inits = []
    x = "nchw"
    if preprocess:
        inits.append(numpy_helper.from_array(np.full((1, 3, 1, 1), 100.0, np.float32), "mean"))
        nodes.append(helper.make_node("Sub", [x, "mean"], ["centred"]))
        x = "centred"
    relus: list[str] = []
    names = layer_names(network)
    indices = conv_indices(network)[: len(conv_indices(network)) - drop_convs]
    for index in indices:
        if index > 0 and names[index - 1].startswith("pool"):
            nodes.append(helper.make_node("MaxPool", [x], [f"pool{index}"], kernel_shape=[2, 2], strides=[2, 2]))
            x = f"pool{index}"
        w, b = f"w{index}", f"b{index}"
        inits.append(numpy_helper.from_array(state[f"features.{index}.weight"].numpy(), w))
        inits.append(numpy_helper.from_array(state[f"features.{index}.bias"].numpy(), b))
        nodes.append(helper.make_node("Conv", [x, w, b], [f"conv{index}"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"conv{index}"], [f"relu{index}"]))
        x = f"relu{index}"
        relus.append(x)
    nodes.append(helper.make_node("MaxPool", [x], ["pool_last"], kernel_shape=[2, 2], strides=[2, 2]))
    nodes.append(helper.make_node("GlobalAveragePool", ["pool_last"], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"]))
    inits.append(numpy_helper.from_array(np.zeros((512, 4), np.float32), "dense"))
    nodes.append(helper.make_node("MatMul", ["flat", "dense"], ["logits"]))
    graph = helper.make_graph(
        nodes,
        "keras_like_vgg",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", side, side, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return relus


def assert_relus_match(path: Path, relus: list[str], state: dict[str, torch.Tensor], image: torch.Tensor) -> None:
    """The caffe-convention VGG16 torch module on ``image`` (RGB [0, 1]) against ``path``'s own ReLU outputs for the
    same image preprocessed the Caffe way (BGR, 0-255, minus the mean) in NHWC, layer by layer, to 1e-4 relative."""
    from nst_engine.vgg import CAFFE_MEAN_BGR, VGGFeatures

    caffe = image[:, [2, 1, 0]] * 255.0 - torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1)
    expected = relu_outputs(path, relus, caffe.permute(0, 2, 3, 1).contiguous().numpy())
    names = [n for n in layer_names("vgg16") if n.startswith("relu")]
    net = VGGFeatures(names, network="vgg16", convention="caffe")
    net.load_features(state)
    with torch.no_grad():
        ours = net(image)
    for name, graph_name in zip(names, relus, strict=True):
        ref = expected[graph_name]
        rel = np.abs(ours[name].numpy() - ref).max() / np.abs(ref).max()
        assert rel < 1e-4, f"{name}: relative difference {rel:.2e}"


def relu_outputs(path: Path, relus: list[str], nhwc: np.ndarray) -> dict[str, np.ndarray]:
    """Run ``path`` in ONNX Runtime with its ReLU outputs exposed."""
    import onnxruntime as ort

    model = onnx.load(str(path))
    del model.graph.output[:]
    for name in relus:
        model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    values = session.run(relus, {session.get_inputs()[0].name: nhwc})
    return dict(zip(relus, values, strict=True))
