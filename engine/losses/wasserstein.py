"""The Gaussian W2 loss (as crowsonkb/style-transfer-pytorch's): mean and covariance of each layer's features."""

from __future__ import annotations

from typing import ClassVar

import torch

from nst_engine.config import StyleConfig
from nst_engine.losses.functional import StyleStats, moment_sums, sqrtm_psd, wasserstein_loss
from nst_engine.losses.terms import Combine, Stats, StyleLoss


class WassersteinLoss(StyleLoss):
    """Squared 2-Wasserstein distance between Gaussians fitted to the image's and the target's features."""

    power = 2
    combine: ClassVar[dict[str, Combine]] = {"moment": "sum", "first": "sum", "count": "sum"}

    def __init__(self, target: StyleStats, config: StyleConfig, layer: str) -> None:
        super().__init__(target, config, layer)
        # The target covariance's square root never changes: once, not every step.
        self.cov_sqrt = sqrtm_psd(target.covariance)

    def local(self, feature: torch.Tensor, mask: torch.Tensor | None) -> Stats:
        moment, first, count = moment_sums(feature, mask)
        assert first is not None
        return {"moment": moment, "first": first, "count": count}

    def value(self, stats: Stats) -> torch.Tensor:
        area = stats["count"].clamp_min(1e-8)
        return wasserstein_loss(StyleStats(stats["moment"] / area, stats["first"] / area), self.target, self.cov_sqrt)
