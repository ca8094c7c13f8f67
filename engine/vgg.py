"""VGG19's feature network, truncated after the deepest layer asked for, returning named features.

The module takes RGB images in [0, 1] and applies ImageNet normalisation itself, so that the ONNX
graph exported from it has the same contract. Module indices follow torchvision (``features.N``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import torch
from torch import nn

from engine.errors import WeightsError
from engine.layers import CONV_INDICES, LAYER_INDEX, LAYER_NAMES, deepest, ordered

Pooling = Literal["max", "avg"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Average pooling of ReLU outputs gives smaller activations than max pooling, and the gap compounds over the
# five stages, so loss weights tuned for max pooling no longer balance. crowsonkb/style-transfer-pytorch scales
# average pooling by a constant 2 (tuned on the ImageNet weights); we measure each stage's factor on the weights
# in hand instead (``calibrate_avg_pooling``), so the magnitudes match whatever the weights. 2 is the fallback.
AVG_POOL_SCALE = 2.0


class ScaledAvgPool2d(nn.Module):
    """2x2 average pooling times a constant."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x) * self.scale


def _conv_shapes() -> dict[int, tuple[int, int]]:
    """(in_channels, out_channels) of each convolution, keyed by torchvision index."""
    shapes: dict[int, tuple[int, int]] = {}
    channels = 3
    for index in CONV_INDICES:
        block = int(LAYER_NAMES[index][4])
        out = (64, 128, 256, 512, 512)[block - 1]
        shapes[index] = (channels, out)
        channels = out
    return shapes


CONV_SHAPES = _conv_shapes()


def _make_module(index: int, pooling: Pooling, scales: dict[int, float]) -> nn.Module:
    name = LAYER_NAMES[index]
    if name.startswith("conv"):
        cin, cout = CONV_SHAPES[index]
        return nn.Conv2d(cin, cout, kernel_size=3, padding=1)
    if name.startswith("relu"):
        # Not in place: a conv layer's output may itself be a requested feature.
        return nn.ReLU(inplace=False)
    if pooling == "avg":
        return ScaledAvgPool2d(scales.get(index, AVG_POOL_SCALE))
    return nn.MaxPool2d(kernel_size=2, stride=2)


class VGGFeatures(nn.Module):
    """Truncated VGG19 returning ``{layer_name: feature}``.

    Input: ``(N, 3, H, W)`` float RGB in [0, 1]. Output: for each requested layer a ``(N, C, H/s, W/s)``
    tensor, s being the layer's stride. Weights never require gradients: only the image is optimised.
    """

    def __init__(
        self, layers: Sequence[str], pooling: Pooling = "max", pool_scales: Sequence[float] | None = None
    ) -> None:
        super().__init__()
        if pooling not in ("max", "avg"):
            raise ValueError(f"pooling must be 'max' or 'avg', not {pooling!r}")
        self.layers = ordered(layers)
        self.pooling: Pooling = pooling
        last = LAYER_INDEX[deepest(self.layers)]
        pools = [i for i, name in enumerate(LAYER_NAMES) if name.startswith("pool")]
        scales = dict(zip(pools, pool_scales or (), strict=False))
        self.features = nn.Sequential(*(_make_module(i, pooling, scales) for i in range(last + 1)))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self._wanted = {LAYER_INDEX[n]: n for n in self.layers}
        self.compiled_forward: Callable[[torch.Tensor], dict[str, torch.Tensor]] | None = None  # see objective
        self.requires_grad_(False)
        self.eval()

    @property
    def conv_indices(self) -> tuple[int, ...]:
        return tuple(i for i in CONV_INDICES if i < len(self.features))

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        mean, std = self.mean, self.std
        assert isinstance(mean, torch.Tensor) and isinstance(std, torch.Tensor)
        x = (image - mean) / std
        out: dict[str, torch.Tensor] = {}
        for index, module in enumerate(self.features):
            x = module(x)
            if index in self._wanted:
                out[self._wanted[index]] = x
        return out

    @property
    def pool_scales(self) -> tuple[float, ...]:
        """The average-pooling factors in use, one per pooling stage in the network (empty for max pooling)."""
        return tuple(m.scale for m in self.features if isinstance(m, ScaledAvgPool2d))

    def calibrate_avg_pooling(self, seed: int = 0) -> tuple[float, ...]:
        """Set each average-pooling stage's factor to mean(max-pooled) / mean(avg-pooled) of its input.

        Measured stage by stage (each after the earlier ones are set) on smooth random images, so activation
        magnitudes after every stage match the max-pooling network's. Returns the factors.
        """
        gen = torch.Generator().manual_seed(seed)
        coarse = torch.rand(4, 3, 16, 16, generator=gen)
        images = nn.functional.interpolate(coarse, size=(128, 128), mode="bilinear", align_corners=False)
        mean, std = self.mean, self.std
        assert isinstance(mean, torch.Tensor) and isinstance(std, torch.Tensor)
        x = (images - mean) / std
        with torch.no_grad():
            for module in self.features:
                if isinstance(module, ScaledAvgPool2d):
                    peak = nn.functional.max_pool2d(x, 2).mean()
                    average = nn.functional.avg_pool2d(x, 2).mean()
                    module.scale = float(peak / average) if float(average) > 0 else AVG_POOL_SCALE
                x = module(x)
        return self.pool_scales

    def load_features(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load ``features.N.weight`` / ``features.N.bias`` tensors; extra keys (a classifier) are ignored."""
        for index in self.conv_indices:
            conv = self.features[index]
            assert isinstance(conv, nn.Conv2d)
            for kind, param in (("weight", conv.weight), ("bias", conv.bias)):
                key = f"features.{index}.{kind}"
                if key not in state:
                    raise WeightsError(
                        f"weights have no '{key}'; expected a torchvision-format VGG19 file "
                        "(keys 'features.N.weight' / 'features.N.bias')"
                    )
                value = torch.as_tensor(state[key])
                assert param is not None
                if tuple(value.shape) != tuple(param.shape):
                    raise WeightsError(
                        f"'{key}' has shape {tuple(value.shape)}, VGG19 needs {tuple(param.shape)}; "
                        "is this a VGG19 file (not VGG16 or another network)?"
                    )
                with torch.no_grad():
                    param.copy_(value.to(param.dtype))

    def state_features(self) -> dict[str, torch.Tensor]:
        """The convolution weights in torchvision format."""
        return {k: v for k, v in self.state_dict().items() if k.startswith("features.")}
