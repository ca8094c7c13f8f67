"""Export the truncated VGG16 / VGG19 feature network to ONNX, then prove the file against the torch module."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
from torch import nn

import nst_engine
from nst_engine.errors import ModelError
from nst_engine.export.validate import Comparison, validate
from nst_engine.files import atomic_path
from nst_engine.layers import min_input_size, ordered
from nst_engine.onnx_weights import META_PREFIX as ONNX_META_PREFIX
from nst_engine.vgg import Pooling, VGGFeatures, measure_feature_scale
from nst_engine.weights import Weights

OPSET = 18
INPUT_NAME = "image"
META_PREFIX = ONNX_META_PREFIX
FORMAT_VERSION = "2"  # 2: network, input_convention and feature_scale recorded
MAX_SIDE = 16384


class _ExportWrapper(nn.Module):
    """Export-only view of VGGFeatures: a tuple of outputs in layer order instead of a dict.

    It shares the module's submodules at the top level, so the initializers keep torchvision's names
    (``features.N.weight``) rather than gaining a prefix.
    """

    def __init__(self, net: VGGFeatures) -> None:
        super().__init__()
        self.features = net.features
        self.net_forward = net.forward
        self.layers = net.layers

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.net_forward(image)
        return tuple(features[layer] for layer in self.layers)


@dataclass(frozen=True)
class ExportReport:
    path: Path
    layers: tuple[str, ...]
    pooling: str
    weights: str
    comparisons: tuple[Comparison, ...]
    network: str = "vgg19"
    convention: str = "torchvision"
    feature_scale: float = 1.0

    @property
    def max_abs(self) -> float:
        return max(c.max_abs for c in self.comparisons)

    @property
    def max_rel(self) -> float:
        return max(c.max_rel for c in self.comparisons)


def build_net(weights: Weights, layers: Sequence[str], pooling: Pooling) -> VGGFeatures:
    """The torch module to export; average pooling gets factors measured on these weights, and the feature scale
    is measured on the whole network (so it does not depend on where the export is cut)."""
    net = VGGFeatures(layers, pooling, network=weights.network, convention=weights.convention)
    net.load_features(weights.state)
    if pooling == "avg":
        net.calibrate_avg_pooling()
    net.feature_scale = measure_feature_scale(weights.state, weights.network, weights.convention, pooling)
    return net


def metadata(net: VGGFeatures, weights: Weights) -> dict[str, str]:
    return {
        f"{META_PREFIX}format": FORMAT_VERSION,
        f"{META_PREFIX}layers": ",".join(net.layers),
        f"{META_PREFIX}network": net.network,
        f"{META_PREFIX}input_convention": net.convention,
        f"{META_PREFIX}feature_scale": f"{net.feature_scale:.8g}",
        f"{META_PREFIX}pooling": net.pooling,
        f"{META_PREFIX}pool_scales": ",".join(f"{s:.8g}" for s in net.pool_scales),
        f"{META_PREFIX}weights": weights.source if weights.pretrained else "random",
        f"{META_PREFIX}weights_label": weights.label,
        f"{META_PREFIX}weights_sha256": weights.sha256,
        f"{META_PREFIX}pretrained": "true" if weights.pretrained else "false",
        f"{META_PREFIX}engine_version": nst_engine.__version__,
        f"{META_PREFIX}input": f"RGB float32 NCHW in [0,1]; {net.convention} preprocessing inside the graph",
    }


def _trace(net: VGGFeatures, path: Path, opset: int) -> None:
    side = max(64, min_input_size(net.layers) * 4)
    batch = torch.export.Dim("batch", min=1, max=1024)
    height = torch.export.Dim("height", min=min_input_size(net.layers), max=MAX_SIDE)
    width = torch.export.Dim("width", min=min_input_size(net.layers), max=MAX_SIDE)
    sample = torch.rand(2, 3, side, side + 8)
    # The exporter narrates its passes on stdout and warns about internals; neither is for our users.
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            _ExportWrapper(net).eval(),
            (sample,),
            dynamo=True,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=list(net.layers),
            dynamic_shapes=({0: batch, 2: height, 3: width},),
            external_data=False,
            verbose=False,
        )
    quiet.setLevel(level)
    if program is None:
        raise ModelError("torch.onnx.export returned no program; upgrade torch to 2.5 or newer")
    program.save(str(path), external_data=False)


def export(
    weights: Weights,
    path: str | Path,
    layers: Sequence[str],
    pooling: Pooling = "max",
    opset: int = OPSET,
    tolerance: float = 1e-4,
) -> ExportReport:
    """Export the weights' VGG truncated after the deepest of ``layers`` to ``path``; validate; write atomically.

    Raises ExportValidationError if ONNX Runtime's features differ from torch's by more than ``tolerance``
    (max absolute difference relative to the largest reference value), leaving nothing at ``path``.
    """
    path = Path(path)
    newest = onnx.defs.onnx_opset_version()
    if opset < 17 or opset > newest:
        raise ModelError(f"--opset {opset} is outside what this exporter writes; use 17 to {newest} (18 by default)")
    net = build_net(weights, ordered(layers), pooling)
    with atomic_path(path) as tmp:
        _trace(net, tmp, opset)
        model = onnx.load(str(tmp))
        for key, value in metadata(net, weights).items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        model.producer_name = "nst-engine"
        model.producer_version = nst_engine.__version__
        written = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
        if written != opset:
            raise ModelError(f"the exporter wrote opset {written}, not the {opset} asked for; use --opset {written}")
        onnx.checker.check_model(model)
        onnx.save(model, str(tmp))
        comparisons = validate(tmp, net, tolerance=tolerance)
    return ExportReport(
        path, net.layers, pooling, weights.label, comparisons, net.network, net.convention, net.feature_scale
    )
