"""The sliced Wasserstein loss (Heitz et al., CVPR 2021): whole feature distributions, not two moments.

The layer's features are projected on N random unit directions (``--sw-projections``), each projection sorted
and compared with the painting's sorted projections at the same quantiles. Gram and Gaussian W2 match only the
first two moments, so a painting's contrast and its rare, sharp strokes are averaged away; the sorted projections
keep them. The directions come from the run's seed (a seeded run gives the same bytes) and stay fixed for a scale
unless ``--sw-redraw N`` draws fresh ones every N steps. Heitz et al. redraw at every evaluation; with this
engine's L-BFGS that loses most of the progress (each step's curvature pairs describe another objective): measured
in bench/reports/cpu-2core-losses, fixed directions reach a closer picture in the same steps.

The painting's side is a fixed sample of its positions (``StyleStats.samples``); the image's positions are all
used. Tiled: projections are concatenated over tiles ("cat") and sorted once, so it is exact.
"""

from __future__ import annotations

import zlib
from typing import ClassVar

import torch

from nst_engine.config import StyleConfig
from nst_engine.errors import ConfigError
from nst_engine.losses.functional import (
    StyleStats,
    even_levels,
    feature_matrix,
    quantile_lookup,
    sliced_loss,
    sorted_quantiles,
    unit_directions,
)
from nst_engine.losses.terms import Combine, Stats, StyleLoss


class SlicedLoss(StyleLoss):
    """Mean over random directions of the squared 1-D Wasserstein distance between projected feature sets."""

    #: Each layer's distance is divided by the painting's mean squared feature there, so that it is scale-free: layers
    #: whose activations differ in size by orders of magnitude weigh alike (unscaled, relu1_1, which carries colour,
    #: weighs a hundredth of relu3_1), and feature units do not matter.
    power = 0
    combine: ClassVar[dict[str, Combine]] = {"projections": "cat", "weights": "cat"}

    def __init__(self, target: StyleStats, config: StyleConfig, layer: str) -> None:
        super().__init__(target, config, layer)
        if target.samples is None:
            raise ConfigError("this style target has no feature samples for --style-loss sliced; clear the cache")
        self.samples = target.samples
        self.sample_weights = target.sample_weights
        self.count = config.sw_projections
        self.energy = float(target.moment.diagonal().mean().clamp_min(1e-12))
        self.seed = (config.seed * 1_000_003 + zlib.crc32(layer.encode())) % 2**62
        self.directions = torch.empty(0)
        self.quantiles: tuple[torch.Tensor, torch.Tensor | None] = (torch.empty(0), None)
        self.every, self.drawn = config.sw_redraw, -1
        self.redraws = self.every > 0
        self.draw(0)

    def draw(self, evaluation: int) -> None:
        draw = 0 if self.every == 0 else evaluation // self.every
        if draw == self.drawn:
            return
        channels = int(self.samples.shape[1])
        directions = unit_directions(channels, self.count, self.seed + draw).to(self.samples.device)
        self.directions, self.drawn = directions, draw
        self.quantiles = sorted_quantiles(directions.T @ self.samples.T, self.sample_weights)
        self.matched: dict[tuple[int, torch.dtype], torch.Tensor] = {}

    def local(self, feature: torch.Tensor, mask: torch.Tensor | None) -> Stats:
        f = feature_matrix(feature)  # (C, M)
        # (N, M): a row per direction, so that each sort runs along contiguous memory (twice as fast as columns).
        out = {"projections": self.directions.T.to(f.dtype) @ f}
        if mask is not None:
            out["weights"] = mask.to(f.dtype).flatten()
        return out

    def _matched(self, count: int, like: torch.Tensor) -> torch.Tensor:
        """The target's values at the even levels of ``count`` positions: fixed while the directions are."""
        key = (count, like.dtype)
        if key not in self.matched:
            target, levels = self.quantiles
            self.matched[key] = quantile_lookup(target.to(like.dtype), levels, even_levels(count, like))
        return self.matched[key]

    def value(self, stats: Stats) -> torch.Tensor:
        target, levels = self.quantiles
        projections, weights = stats["projections"], stats.get("weights")
        matched = None if weights is not None else self._matched(int(projections.shape[-1]), projections)
        return sliced_loss(projections, target, levels, weights, matched) / self.energy
