"""Every setting of a stylization run in one frozen dataclass: its field defaults are the only copy of each default."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from engine.errors import ConfigError
from engine.layers import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS, deepest, min_input_size, parse_layers
from engine.losses import Normalization, StyleLossKind
from engine.vgg import Pooling

Optimizer = Literal["lbfgs", "adam"]
Precision = Literal["fp32", "tf32", "bf16", "fp16"]
ColorMode = Literal["none", "luminance", "histogram"]
Device = Literal["auto", "cpu", "cuda"]
Provider = Literal["auto", "cpu", "cuda", "tensorrt"]
CudaGraph = Literal["auto", "on", "off"]
FeatureUnits = Literal["normalized", "raw"]

#: Learning rates that suit each optimiser when --lr is not given (pixels are in [0, 1]).
DEFAULT_LR: dict[str, float] = {"lbfgs": 1.0, "adam": 0.02}


@dataclass(frozen=True)
class StyleConfig:
    """Settings of one stylization. Tensors never live here: this is what a trace records."""

    size: int = 512  # output long side, pixels
    style_scale: float = 1.0  # style image long side = size * style_scale
    steps: int = 500  # optimisation steps at the final scale
    optimizer: Optimizer = "lbfgs"
    lr: float | None = None  # None: DEFAULT_LR[optimizer]
    lbfgs_history: int = 30  # curvature pairs; each costs 2 * 3 * H * W floats (100 at 512 px: 630 MB)
    init: str = "content"  # "content", "random" or an image path
    seed: int = 0
    content_layers: tuple[str, ...] = DEFAULT_CONTENT_LAYERS
    style_layers: tuple[str, ...] = DEFAULT_STYLE_LAYERS
    style_layer_weights: tuple[float, ...] | None = None  # None: equal, summing to 1
    content_weight: float = 1.0
    # jcjohnson/neural-style's 100 : 5 on a Caffe VGG, in normalised units (bench/reports/cpu-2core-real-defaults).
    style_weight: float = 3e6
    tv_weight: float = 1e-3
    pooling: Pooling = "max"
    normalization: Normalization = "mean"
    style_loss: StyleLossKind = "gram"
    normalize_gradients: bool = False
    # "normalized": losses on features divided by the model's measured feature scale, so that one set of loss
    # weights balances under torchvision (RGB, about -2..2) and caffe (BGR, 0-255) input; "raw": on the network's
    # own features, as the reference implementations whose weights the presets copy.
    feature_units: FeatureUnits = "normalized"
    style_blend_weights: tuple[float, ...] | None = None  # None: equal
    scales: int = 1  # coarse-to-fine levels; 1 = single scale
    scale_factor: float = 2.0  # size ratio between successive scales
    scale_steps: int | None = None  # steps at each coarser scale; None: steps // 2
    preserve_colors: ColorMode = "none"
    device: Device = "auto"
    precision: Precision = "fp32"
    compile: bool = False  # torch.compile the network (slow first step; pays off on long GPU runs)
    # NHWC memory format. Measured on a 2-core CPU: 512 px step 1.12x the baseline's speed vs 0.90x for NCHW,
    # equal within noise at 256 px; cuDNN's NHWC kernels are the fast ones on CUDA.
    channels_last: bool = True
    cuda_graph: CudaGraph = "auto"  # capture the whole step in a CUDA graph (auto: on CUDA, checked, else eager)
    max_input_pixels: int = 8192 * 8192
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "content_layers", parse_layers(self.content_layers))
        object.__setattr__(self, "style_layers", parse_layers(self.style_layers))
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError for settings that cannot work."""
        for name, value in self._floats():
            if not math.isfinite(value):
                raise ConfigError(f"--{name.replace('_', '-')} must be a finite number, not {value}")
        if self.size < 1:
            raise ConfigError(f"--size must be a positive number of pixels, not {self.size}")
        smallest = min_input_size(self.layers)
        if self.size < smallest:
            raise ConfigError(
                f"--size {self.size} is below the network's minimum of {smallest} px for layer "
                f"'{deepest(self.layers)}'; use --size {smallest} or more"
            )
        if self.steps < 0 or (self.scale_steps is not None and self.scale_steps < 0):
            raise ConfigError("--steps and --scale-steps must be 0 or more")
        if self.feature_units not in ("normalized", "raw"):
            raise ConfigError(f"--feature-units must be normalized or raw, not '{self.feature_units}'")
        if self.optimizer not in DEFAULT_LR:
            raise ConfigError(f"--optimizer must be 'lbfgs' or 'adam', not '{self.optimizer}'")
        if self.cuda_graph not in ("auto", "on", "off"):
            raise ConfigError(f"--cuda-graph must be auto, on or off, not '{self.cuda_graph}'")
        if self.lr is not None and self.lr <= 0:
            raise ConfigError(f"--lr must be positive, not {self.lr}")
        if self.style_scale <= 0:
            raise ConfigError(f"--style-scale must be positive, not {self.style_scale}")
        if self.scales < 1:
            raise ConfigError(f"--scales must be 1 or more, not {self.scales}")
        if self.scale_factor <= 1:
            raise ConfigError(f"the scale factor must be above 1, not {self.scale_factor}")
        weights = self.style_layer_weights
        if weights is not None and len(weights) != len(self.style_layers):
            raise ConfigError(
                f"--style-layer-weights has {len(weights)} values for {len(self.style_layers)} style layers; "
                "give one each"
            )
        for name, value in (("content", self.content_weight), ("style", self.style_weight), ("tv", self.tv_weight)):
            if value < 0:
                raise ConfigError(f"--{name}-weight must be 0 or more, not {value}")

    def _floats(self) -> list[tuple[str, float]]:
        """Every float setting (NaN and inf pass every range check, so they are refused first)."""
        out = [
            (f.name, float(getattr(self, f.name)))
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), float)
        ]
        for name in ("style_layer_weights", "style_blend_weights"):
            out += [(name, float(v)) for v in getattr(self, name) or ()]
        return out

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.content_layers + self.style_layers))

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    @property
    def layer_weights(self) -> dict[str, float]:
        """Per style layer weight, normalised to sum to 1."""
        raw = self.style_layer_weights or tuple(1.0 for _ in self.style_layers)
        total = sum(raw)
        if total <= 0:
            raise ConfigError("--style-layer-weights must have a positive sum")
        return {layer: w / total for layer, w in zip(self.style_layers, raw, strict=True)}

    def scale_sizes(self) -> list[int]:
        """Long side of each scale, coarse to fine, the last being ``size``; none below the network minimum."""
        smallest = min_input_size(self.layers)
        sizes = [self.size]
        for _ in range(self.scales - 1):
            nxt = round(sizes[0] / self.scale_factor)
            if nxt < max(smallest, 32):
                break
            sizes.insert(0, nxt)
        return sizes

    def with_min_size(self, min_size: int) -> StyleConfig:
        """Enough scales that the first is at least ``min_size`` px on its long side."""
        if min_size < 1 or min_size > self.size:
            raise ConfigError(f"--min-size must be between 1 and --size ({self.size}), not {min_size}")
        scales, side = 1, float(self.size)
        while side / self.scale_factor >= min_size:
            side /= self.scale_factor
            scales += 1
        return self.replace(scales=scales)

    def replace(self, **changes: Any) -> StyleConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("extra")
        data["lr"] = self.learning_rate
        return data
