"""VGG16 and VGG19 feature networks, truncated after the deepest layer asked for, returning named features.

The module takes RGB images in [0, 1] and applies its weights' input convention itself, so that the ONNX graph
exported from it has the same contract whatever the weights were trained on:

- ``torchvision``: RGB in [0, 1] normalised by the ImageNet mean and std (torchvision's models);
- ``caffe``: BGR in 0-255 minus the ImageNet mean pixel (the Caffe models of Simonyan and Zisserman, used by
  jcjohnson/neural-style and neural-style-pt, and Keras' ``preprocess_input`` in its ``caffe`` mode).

Module indices follow torchvision (``features.N``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import torch
from torch import nn

from nst_engine.errors import WeightsError
from nst_engine.layers import (
    Network,
    Pooling,
    check_layers,
    conv_indices,
    conv_shapes,
    deepest,
    layer_index,
    layer_names,
    ordered,
)

Convention = Literal["torchvision", "caffe"]
CONVENTIONS: tuple[Convention, ...] = ("torchvision", "caffe")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Caffe's ImageNet mean pixel, in BGR order and 0-255 units.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

#: Kept for code that only ever meant VGG19.
CONV_SHAPES = conv_shapes("vgg19")

# Average pooling of ReLU outputs gives smaller activations than max pooling, and the gap compounds over the
# five stages, so loss weights tuned for max pooling no longer balance. crowsonkb/style-transfer-pytorch scales
# average pooling by a constant 2 (tuned on the ImageNet weights); we measure each stage's factor on the weights
# in hand instead (``calibrate_avg_pooling``), so the magnitudes match whatever the weights. 2 is the fallback.
AVG_POOL_SCALE = 2.0


def convention_constants(convention: str) -> tuple[bool, tuple[float, ...], tuple[float, ...]]:
    """(swap RGB to BGR, mean, std) such that the network's input is (image[, ::-1] - mean) / std, image in [0, 1]."""
    if convention == "torchvision":
        return False, IMAGENET_MEAN, IMAGENET_STD
    if convention == "caffe":
        return True, tuple(m / 255.0 for m in CAFFE_MEAN_BGR), (1.0 / 255.0,) * 3
    raise WeightsError(f"unknown input convention '{convention}'; choose torchvision or caffe")


class ScaledAvgPool2d(nn.Module):
    """2x2 average pooling times a constant."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x) * self.scale


def _make_module(network: str, index: int, pooling: Pooling, scales: dict[int, float]) -> nn.Module:
    name = layer_names(network)[index]
    if name.startswith("conv"):
        cin, cout = conv_shapes(network)[index]
        return nn.Conv2d(cin, cout, kernel_size=3, padding=1)
    if name.startswith("relu"):
        # Not in place: a conv layer's output may itself be a requested feature.
        return nn.ReLU(inplace=False)
    if pooling == "avg":
        return ScaledAvgPool2d(scales.get(index, AVG_POOL_SCALE))
    return nn.MaxPool2d(kernel_size=2, stride=2)


class VGGFeatures(nn.Module):
    """Truncated VGG16 or VGG19 returning ``{layer_name: feature}``.

    Input: ``(N, 3, H, W)`` float RGB in [0, 1], whatever the convention. Output: for each requested layer a
    ``(N, C, H/s, W/s)`` tensor, s being the layer's stride. Weights never require gradients: only the image is
    optimised.
    """

    def __init__(
        self,
        layers: Sequence[str],
        pooling: Pooling = "max",
        pool_scales: Sequence[float] | None = None,
        network: Network = "vgg19",
        convention: Convention = "torchvision",
    ) -> None:
        super().__init__()
        if pooling not in ("max", "avg"):
            raise ValueError(f"pooling must be 'max' or 'avg', not {pooling!r}")
        self.network: Network = network
        self.convention: Convention = convention
        self.layers = check_layers(ordered(layers), network)
        self.pooling: Pooling = pooling
        index = layer_index(network)
        last = index[deepest(self.layers)]
        pools = [i for i, name in enumerate(layer_names(network)) if name.startswith("pool")]
        scales = dict(zip(pools, pool_scales or (), strict=False))
        self.features = nn.Sequential(*(_make_module(network, i, pooling, scales) for i in range(last + 1)))
        swap, mean, std = convention_constants(convention)
        self.swap_rgb = swap
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self._wanted = {index[n]: n for n in self.layers}
        #: RMS activation size of these weights (``measure_feature_scale``), recorded at export; the objective
        #: divides features by it. 1.0 for a module not made from an exported model.
        self.feature_scale = 1.0
        self.compiled_forward: Callable[[torch.Tensor], dict[str, torch.Tensor]] | None = None  # see objective
        self.requires_grad_(False)
        self.eval()

    @property
    def conv_indices(self) -> tuple[int, ...]:
        return tuple(i for i in conv_indices(self.network) if i < len(self.features))

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """RGB [0, 1] to what the weights were trained on."""
        mean, std = self.mean, self.std
        assert isinstance(mean, torch.Tensor) and isinstance(std, torch.Tensor)
        if self.swap_rgb:
            image = image.flip(1)
        return (image - mean) / std

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.preprocess(image)
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
        x = self.preprocess(calibration_images(seed))
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
        label = self.network.upper()
        for index in self.conv_indices:
            conv = self.features[index]
            assert isinstance(conv, nn.Conv2d)
            for kind, param in (("weight", conv.weight), ("bias", conv.bias)):
                key = f"features.{index}.{kind}"
                if key not in state:
                    raise WeightsError(
                        f"weights have no '{key}'; expected a torchvision-format {label} file "
                        "(keys 'features.N.weight' / 'features.N.bias')"
                    )
                value = torch.as_tensor(state[key])
                assert param is not None
                if tuple(value.shape) != tuple(param.shape):
                    raise WeightsError(
                        f"'{key}' has shape {tuple(value.shape)}, {label} needs {tuple(param.shape)}; "
                        f"is this a {label} file (not another network)?"
                    )
                with torch.no_grad():
                    param.copy_(value.to(param.dtype))

    def state_features(self) -> dict[str, torch.Tensor]:
        """The convolution weights in torchvision format."""
        return {k: v for k, v in self.state_dict().items() if k.startswith("features.")}


def calibration_images(seed: int = 0, side: int = 128) -> torch.Tensor:
    """Four smooth random RGB images in [0, 1]: a fixed input on which magnitudes are measured at export."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(4, 3, 16, 16, generator=gen)
    return nn.functional.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)


#: The layers whose activation size defines a network's feature scale: the default style layers, in both networks.
SCALE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")


def measure_feature_scale(
    state: Mapping[str, torch.Tensor], network: Network, convention: Convention, pooling: Pooling = "max"
) -> float:
    """The mean over SCALE_LAYERS of each layer's RMS activation, on ``calibration_images``.

    Caffe-convention features are a few hundred times larger than torchvision-convention ones (inputs in 0-255
    rather than about -2..2), so losses differ by 255^2 (content) and 255^4 (Gram style): the objective divides
    features by this scale, so one set of default loss weights balances under both conventions.
    """
    net = VGGFeatures(SCALE_LAYERS, pooling, network=network, convention=convention)
    net.load_features(state)
    if pooling == "avg":
        net.calibrate_avg_pooling()
    with torch.no_grad():
        features = net(calibration_images())
    rms = [float(features[layer].double().pow(2).mean().sqrt()) for layer in SCALE_LAYERS]
    return sum(rms) / len(rms)
