"""ONNX Runtime against torch on the same inputs: shapes first, then values, with a typed error."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nst_engine.errors import ExportValidationError
from nst_engine.export.runtime import OnnxEncoder
from nst_engine.layers import min_input_size
from nst_engine.vgg import VGGFeatures

#: (height, width) pairs used to check dynamic shapes; multiplied by the network's minimum input size.
CHECK_SHAPES = ((4, 5), (7, 3))


@dataclass(frozen=True)
class Comparison:
    shape: tuple[int, ...]  # input shape
    layer: str
    max_abs: float
    max_rel: float  # max_abs divided by the largest absolute reference value


def compare(reference: np.ndarray, candidate: np.ndarray, layer: str, shape: tuple[int, ...]) -> Comparison:
    if reference.shape != candidate.shape:
        raise ExportValidationError(
            f"layer '{layer}' has shape {candidate.shape} in ONNX Runtime but {reference.shape} in torch "
            f"for input {shape}; re-export the model",
            float("inf"),
            float("inf"),
        )
    max_abs = float(np.abs(reference - candidate).max()) if reference.size else 0.0
    scale = float(np.abs(reference).max()) if reference.size else 0.0
    return Comparison(shape, layer, max_abs, max_abs / scale if scale > 0 else max_abs)


def validate(path: str | Path, net: VGGFeatures, tolerance: float = 1e-4, seed: int = 0) -> tuple[Comparison, ...]:
    """Run the ONNX file and ``net`` at two input sizes; raise ExportValidationError past ``tolerance``."""
    encoder = OnnxEncoder(path, provider="cpu")
    unit = min_input_size(net.layers)
    gen = torch.Generator().manual_seed(seed)
    results: list[Comparison] = []
    for h, w in CHECK_SHAPES:
        image = torch.rand(1, 3, h * unit, w * unit, generator=gen)
        with torch.no_grad():
            expected = net(image)
        got = encoder(image)
        for layer in net.layers:
            results.append(compare(expected[layer].numpy(), got[layer].numpy(), layer, tuple(image.shape)))
    worst = max(results, key=lambda c: c.max_rel)
    if not worst.max_rel <= tolerance:  # a NaN difference fails too
        raise ExportValidationError(
            f"ONNX model '{path}' disagrees with torch at layer '{worst.layer}' for input {worst.shape}: "
            f"max abs {worst.max_abs:.3g}, max rel {worst.max_rel:.3g} > tolerance {tolerance:g}; "
            "the file may be damaged, re-export it",
            worst.max_abs,
            worst.max_rel,
        )
    return tuple(results)
