"""The sliced Wasserstein loss (Heitz et al., CVPR 2021): whole feature distributions, not two moments.

Each evaluation projects the layer's features on N random unit directions (``--sw-projections``), sorts each
projection and compares it with the painting's sorted projections at the same quantiles. Gram and Gaussian W2
match only the first two moments, so a painting's contrast and its rare, sharp strokes are averaged away; the
sorted projections keep them. Directions are redrawn at every evaluation from the run's seed, so a seeded run
gives the same bytes. The painting's side is a fixed sample of its positions (``StyleStats.samples``); the image's
positions are all used. Tiled: projections are concatenated over tiles ("cat") and sorted once, so it is exact.
"""

from __future__ import annotations

import zlib
from typing import ClassVar

import torch

from nst_engine.config import StyleConfig
from nst_engine.errors import ConfigError
from nst_engine.losses.functional import StyleStats, feature_matrix, sliced_loss, sorted_quantiles, unit_directions
from nst_engine.losses.terms import Combine, Stats, StyleLoss


class SlicedLoss(StyleLoss):
    """Mean over random directions of the squared 1-D Wasserstein distance between projected feature sets."""

    power = 2
    combine: ClassVar[dict[str, Combine]] = {"projections": "cat", "weights": "cat"}
    redraws = True

    def __init__(self, target: StyleStats, config: StyleConfig, layer: str) -> None:
        super().__init__(target, config, layer)
        if target.samples is None:
            raise ConfigError("this style target has no feature samples for --style-loss sliced; clear the cache")
        self.samples = target.samples
        self.sample_weights = target.sample_weights
        self.count = config.sw_projections
        self.seed = (config.seed * 1_000_003 + zlib.crc32(layer.encode())) % 2**62
        self.directions = torch.empty(0)
        self.quantiles: tuple[torch.Tensor, torch.Tensor | None] = (torch.empty(0), None)
        self.draw(0)

    def draw(self, evaluation: int) -> None:
        channels = int(self.samples.shape[1])
        directions = unit_directions(channels, self.count, self.seed + evaluation).to(self.samples.device)
        self.directions = directions
        self.quantiles = sorted_quantiles(self.samples @ directions, self.sample_weights)

    def local(self, feature: torch.Tensor, mask: torch.Tensor | None) -> Stats:
        f = feature_matrix(feature)  # (C, M)
        out = {"projections": f.T @ self.directions.to(f.dtype)}
        if mask is not None:
            out["weights"] = mask.to(f.dtype).flatten()
        return out

    def value(self, stats: Stats) -> torch.Tensor:
        target, levels = self.quantiles
        return sliced_loss(stats["projections"], target, levels, stats.get("weights"))
