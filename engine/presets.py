"""Settings that reproduce well-known reference implementations. Explicit options override a preset.

Each preset maps StyleConfig fields to values; ``SOURCES`` says where each comes from (the table in docs/controls.md is
made from the same data).
"""

from __future__ import annotations

from typing import Any

from nst_engine.config import StyleConfig
from nst_engine.errors import ConfigError, did_you_mean

PRESETS: dict[str, dict[str, Any]] = {
    # Gatys' own PyTorch code for Gatys, Ecker, Bethge (CVPR 2016): leongatys/PytorchNeuralStyleTransfer.
    "gatys": {
        "feature_units": "raw",  # the source's weights are for its network's own features
        "content_layers": ("relu4_2",),
        "style_layers": ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
        "style_layer_weights": None,
        "content_weight": 1.0,
        # 1e3 / C^2 on each layer's MSE of Grams divided by H*W: 1e3 on each of ours (Gram / (C*H*W)), averaged.
        "style_weight": 5e3,
        "tv_weight": 0.0,
        "tv_norm": "l2",
        "pooling": "max",
        "normalization": "mean",
        "optimizer": "lbfgs",
        "lbfgs_history": 100,
        "init": "content",
        "steps": 500,
        "size": 512,
    },
    # jcjohnson/neural-style defaults (neural_style.lua).
    "jcjohnson": {
        "feature_units": "raw",  # the source's weights are for its network's own features
        "content_layers": ("relu4_2",),
        "style_layers": ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
        "style_layer_weights": None,
        "content_weight": 5.0,
        "style_weight": 500.0,  # 100 on each of five layers; ours averages them
        "tv_weight": 1e-3,
        "tv_norm": "l1-sum",  # sum of absolute differences of 0-255 pixels
        "pooling": "max",
        "normalization": "mean",
        "optimizer": "lbfgs",
        "lbfgs_history": 100,
        "init": "mean",  # randn * 0.001 around the mean pixel
        "steps": 1000,
        "size": 512,
        "normalize_gradients": False,
    },
    # PyTorch tutorial "Neural Transfer Using PyTorch": losses after conv_1..conv_5 (the first five convolutions).
    "tutorial": {
        "feature_units": "raw",  # the source's weights are for its network's own features
        "content_layers": ("conv2_2",),
        "style_layers": ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1"),
        "style_layer_weights": None,
        "content_weight": 1.0,
        "style_weight": 5e6,  # the tutorial sums five layers at 1e6 each; ours averages them
        "tv_weight": 0.0,
        "tv_norm": "l2",
        "pooling": "max",
        "normalization": "mean",
        "optimizer": "lbfgs",
        "lbfgs_history": 100,
        "init": "content",
        "steps": 300,
        "size": 512,
    },
}

SOURCES: dict[str, str] = {
    "gatys": "Gatys' PyTorch code (leongatys/PytorchNeuralStyleTransfer, for Gatys et al. 2016): r42 content, "
    "r11..r51 style with 1e3/C^2 on each layer's MSE of Grams / (H*W), MSE content at 1, max pooling, L-BFGS from "
    "the photo, 500 iterations, 512 px (its shorter side; here the long side). Not reproduced: the source leaves "
    "pixels unbounded and clips on saving. The paper's own form (average pooling, white noise, 1/(4 N^2 M^2) sums): "
    "--pooling avg --init random --normalization gatys --style-weight 1e3",
    "jcjohnson": "jcjohnson/neural-style defaults: -content_weight 5 -style_weight 100 (on each style layer) "
    "-tv_weight 1e-3 (on the sum of absolute differences of 0-255 pixels) -num_iterations 1000 -image_size 512 "
    "-init random (the mean pixel plus randn * 0.001) -pooling max, lbfgs; Gram / (C*H*W), MSE. Not reproduced: "
    "the source leaves pixels unbounded and clips on saving, and takes torch's L-BFGS steps",
    "tutorial": "PyTorch 'Neural Transfer Using PyTorch': conv_4 content, conv_1..conv_5 style, style_weight 1e6 "
    "per layer, content_weight 1, num_steps 300, LBFGS, input = content clone. It squashes both images to 512x512 "
    "(128 on CPU); here the long side is 512 and the aspect ratio kept",
}


def build_config(name: str | None, given: dict[str, Any], min_size: int | None = None) -> StyleConfig:
    """Defaults, then the preset, then every option the user actually gave; --min-size last (it sets --scales).
    The CLI's options and the web page's fields both end here, so both get the same checks."""
    values: dict[str, Any] = preset(name) if name else {}
    values.update(given)
    config = StyleConfig(**values)
    return config if min_size is None else config.with_min_size(min_size)


def preset(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}';{did_you_mean(name, PRESETS)} choose one of {', '.join(PRESETS)}")
    return dict(PRESETS[name])


#: Fields shown in the preset table of docs/controls.md, in order.
TABLE_FIELDS = (
    "content_layers",
    "style_layers",
    "content_weight",
    "style_weight",
    "tv_weight",
    "tv_norm",
    "pooling",
    "normalization",
    "feature_units",
    "optimizer",
    "init",
    "steps",
    "size",
)


def _cell(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def markdown_table() -> str:
    """The preset table of docs/controls.md, generated from PRESETS (a test checks the page holds exactly this)."""
    header = "| preset | " + " | ".join(f.replace("_", " ") for f in TABLE_FIELDS) + " | source |"
    rule = "|" + " --- |" * (len(TABLE_FIELDS) + 2)
    rows = [
        f"| `{name}` | " + " | ".join(_cell(values.get(f, "")) for f in TABLE_FIELDS) + f" | {SOURCES[name]} |"
        for name, values in PRESETS.items()
    ]
    return "\n".join([header, rule, *rows])
