"""Loss terms: built once from the settings with their targets, computed whole or tile by tile alike.

A *feature term* reads one layer's features. It says how it is computed over parts of the image: ``local`` gives
its statistics of one part (a tile's core, or the whole map), ``combine`` says how parts join ("sum": add them;
"cat": concatenate along positions, the last dim), and ``value`` is the loss of the joined statistics. The whole
objective calls ``value(local(features))``; the tiled one joins every tile's ``local`` first (engine.tiling), which
is exact for any term written this way. A *pixel term* (smoothness, temporal) reads the image itself.

A style loss (``StyleLoss``: Gram, Wasserstein, sliced, one file each, named in ``registry``) is one region's
loss at one layer; a ``StyleTerm`` adds its regions up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch

from nst_engine.config import StyleConfig
from nst_engine.losses.functional import StyleStats, as_fp32, tv_abs_loss, tv_abs_sum_loss, tv_loss
from nst_engine.losses.registry import STYLE_LOSSES, style_loss_class
from nst_engine.resize import resize
from nst_engine.targets import StyleRegion

Combine = Literal["sum", "cat"]
Stats = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Window:
    """Where a part of a feature map lies in the whole one: the whole map's (h, w), and the part's rows and
    columns in it. ``cut`` takes the same part of any whole-image map of that layer (a target, a mask)."""

    full: tuple[int, int]
    rows: tuple[int, int]
    cols: tuple[int, int]

    @staticmethod
    def whole(feature: torch.Tensor) -> Window:
        h, w = int(feature.shape[-2]), int(feature.shape[-1])
        return Window((h, w), (0, h), (0, w))

    @property
    def is_whole(self) -> bool:
        return self.rows == (0, self.full[0]) and self.cols == (0, self.full[1])

    def cut(self, full_map: torch.Tensor) -> torch.Tensor:
        return full_map if self.is_whole else full_map[..., self.rows[0] : self.rows[1], self.cols[0] : self.cols[1]]


class StyleLoss:
    """One kind of style loss for one region at one layer, its target given at construction.

    Subclasses set ``power`` (the loss scales as features**power: how dividing features by a scale is done by
    dividing weights) and ``combine``, and define ``local`` and ``value`` (see the module docstring). ``draw`` is
    called once per evaluation of the objective, before any ``local``: losses that sample (sliced) redraw there.
    """

    power: ClassVar[int] = 2
    combine: ClassVar[Mapping[str, Combine]] = {}
    #: Whether ``draw`` changes the loss during a run (a captured CUDA graph would freeze what it draws).
    redraws: bool = False

    def __init__(self, target: StyleStats, config: StyleConfig, layer: str) -> None:
        self.target, self.config, self.layer = target, config, layer

    def local(self, feature: torch.Tensor, mask: torch.Tensor | None) -> Stats:
        raise NotImplementedError

    def value(self, stats: Stats) -> torch.Tensor:
        raise NotImplementedError

    def draw(self, evaluation: int) -> None:
        """Called with the objective's evaluation count before each evaluation."""


class FeatureTerm:
    """A weighted loss on one layer's features: ``name``, ``layer``, ``weight``, ``combine``, ``local``, ``value``."""

    name: str
    layer: str
    weight: float
    combine: dict[str, Combine]

    def local(self, feature: torch.Tensor, window: Window) -> Stats:
        raise NotImplementedError

    def value(self, stats: Stats) -> torch.Tensor:
        raise NotImplementedError

    def draw(self, evaluation: int) -> None:
        """Called before each evaluation of the objective (see ``StyleLoss.draw``)."""


class ContentTerm(FeatureTerm):
    """Squared error to the photo's features: its mean, or Gatys' half sum."""

    def __init__(self, layer: str, target: torch.Tensor, weight: float, config: StyleConfig) -> None:
        self.name, self.layer, self.weight = f"content.{layer}", layer, weight
        self.target = target.detach()
        self.gatys = config.normalization == "gatys"
        self.combine = {"error": "sum"}

    def local(self, feature: torch.Tensor, window: Window) -> Stats:
        f = as_fp32(feature)
        diff = f - window.cut(self.target).to(f.dtype)
        return {"error": diff.pow(2).sum()}

    def value(self, stats: Stats) -> torch.Tensor:
        if self.gatys:
            return 0.5 * stats["error"]
        # sum / count, not mean: mean's backward materialises an NCHW gradient, which for channels_last features
        # sends every gradient of that layer's backward down a slow mixed-layout path.
        return stats["error"] / (self.target.shape[1] * self.target.shape[2] * self.target.shape[3])


class StyleTerm(FeatureTerm):
    """One style layer: the sum over style regions of each region's ``StyleLoss``, where its mask is set."""

    def __init__(self, layer: str, losses: Sequence[StyleLoss], masks: Sequence[torch.Tensor | None], weight: float):
        self.name, self.layer, self.weight = f"style.{layer}", layer, weight
        self.losses, self.masks = list(losses), list(masks)
        self._sized: dict[tuple[int, tuple[int, int]], torch.Tensor] = {}
        self.combine = {f"{i}.{k}": c for i, loss in enumerate(self.losses) for k, c in loss.combine.items()}

    def _mask(self, index: int, window: Window, device: torch.device) -> torch.Tensor | None:
        mask = self.masks[index]
        if mask is None:
            return None
        key = (index, window.full)
        if key not in self._sized:
            self._sized[key] = resize(mask.to(device), *window.full, kind="mask")
        return window.cut(self._sized[key])

    def local(self, feature: torch.Tensor, window: Window) -> Stats:
        out: Stats = {}
        for i, loss in enumerate(self.losses):
            for key, value in loss.local(feature, self._mask(i, window, feature.device)).items():
                out[f"{i}.{key}"] = value
        return out

    def value(self, stats: Stats) -> torch.Tensor:
        total = next(iter(stats.values())).new_zeros((), dtype=torch.float32)
        for i, loss in enumerate(self.losses):
            prefix = f"{i}."
            total = total + loss.value({k[len(prefix) :]: v for k, v in stats.items() if k.startswith(prefix)})
        return total

    def draw(self, evaluation: int) -> None:
        for loss in self.losses:
            loss.draw(evaluation)


class PixelTerm:
    """A weighted loss on the image's pixels."""

    name: str
    weight: float

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class SmoothnessTerm(PixelTerm):
    """Total variation of the pixels: the mean squared neighbour difference (``l2``), the mean absolute one (``l1``),
    or jcjohnson/neural-style's sum of absolute differences of 0-255 pixels (``l1-sum``), whose size grows with
    the image's. An absolute difference penalises a speckle as much as a squared one does but an edge far less."""

    LOSSES: ClassVar[dict[str, Callable[[torch.Tensor], torch.Tensor]]] = {
        "l2": tv_loss,
        "l1": tv_abs_loss,
        "l1-sum": tv_abs_sum_loss,
    }

    def __init__(self, weight: float, norm: str = "l2") -> None:
        self.name, self.weight = "tv", weight
        self.loss = self.LOSSES[norm]

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self.loss(image)


#: Bench switch (bench/reports/cpu-2core-video-quality): the Gaussian sigma, in pixels, of a low-pass applied to
#: both sides of the temporal term; 0 compares the pixels themselves.
TEMPORAL_BLUR = 0.0


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """(N, C, H, W) blurred by a separable Gaussian of ``sigma`` pixels, edges reflected."""
    radius = max(1, int(2.0 * sigma + 0.5))
    taps = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = image.shape[1]
    out = torch.nn.functional.pad(image, (radius, radius, radius, radius), mode="reflect")
    out = torch.nn.functional.conv2d(out, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return torch.nn.functional.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


class TemporalTerm(PixelTerm):
    """Ruder et al.'s temporal term: the sum over earlier results w warped into this frame, with their certainty
    c (1, 1, H, W), of mean(c * (x - w)^2), pixels in [0, 1]."""

    def __init__(self, warped: Sequence[tuple[torch.Tensor, torch.Tensor]], weight: float) -> None:
        self.name, self.weight = "temporal", float(weight)
        self.blur = TEMPORAL_BLUR
        self.warped = [(self._low(w.detach().float()), c.detach()) for w, c in warped]

    def _low(self, image: torch.Tensor) -> torch.Tensor:
        return gaussian_blur(image, self.blur) if self.blur > 0 else image

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        x = self._low(image.float())
        total = sum((c * (x - w).pow(2)).mean() for w, c in self.warped)
        assert isinstance(total, torch.Tensor)
        return total


@dataclass
class Terms:
    """Every term of an objective: feature terms (content first, then style, in the settings' layer order) and
    pixel terms. ``draw`` is called before each evaluation."""

    features: list[FeatureTerm]
    pixels: list[PixelTerm] = field(default_factory=list)
    evaluations: int = 0

    @property
    def layers(self) -> list[str]:
        return list(dict.fromkeys(t.layer for t in self.features))

    @property
    def redraws(self) -> bool:
        """Whether any term changes from one evaluation to the next (see ``StyleLoss.redraws``)."""
        return any(loss.redraws for t in self.features if isinstance(t, StyleTerm) for loss in t.losses)

    def draw(self) -> None:
        for term in self.features:
            term.draw(self.evaluations)
        self.evaluations += 1


def build_terms(
    config: StyleConfig,
    content: Mapping[str, torch.Tensor],
    regions: Sequence[StyleRegion],
    feature_scale: float = 1.0,
    temporal: tuple[Sequence[tuple[torch.Tensor, torch.Tensor]], float] | None = None,
) -> Terms:
    """The terms of ``config`` with their targets: content features by layer, style regions, and for a video
    frame the earlier results warped into it with the temporal weight. Losses are computed on features divided by
    ``feature_scale`` when ``config.feature_units`` is "normalized": a term scaling as features**p has its weight
    divided by scale**p instead, which leaves the cached targets untouched."""
    scale = feature_scale if config.feature_units == "normalized" else 1.0
    style_cls = style_loss_class(config.style_loss)
    features: list[FeatureTerm] = [
        ContentTerm(layer, content[layer], config.content_weight / scale**2, config) for layer in config.content_layers
    ]
    style_factor = config.style_weight * STYLE_LOSSES[config.style_loss].relative_weight / scale**style_cls.power
    for layer in config.style_layers:
        losses = [style_cls(r.target[layer], config, layer) for r in regions]
        weight = style_factor * config.layer_weights[layer]
        features.append(StyleTerm(layer, losses, [r.mask for r in regions], weight))
    pixels: list[PixelTerm] = [SmoothnessTerm(config.smoothness_weight, config.tv_norm)]
    if temporal is not None and temporal[0] and temporal[1]:
        pixels.append(TemporalTerm(*temporal))
    return Terms(features, pixels)
