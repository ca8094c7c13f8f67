"""The Gram loss (Gatys et al. 2016): squared differences of Gram matrices."""

from __future__ import annotations

from typing import ClassVar

import torch

from nst_engine.losses.functional import StyleStats, gram_loss, moment_sums
from nst_engine.losses.terms import Combine, Stats, StyleLoss


class GramLoss(StyleLoss):
    """Mean squared difference of Gram matrices (``normalization`` "gatys": the paper's 1/(4 N^2 M^2) sum)."""

    power = 4
    combine: ClassVar[dict[str, Combine]] = {"moment": "sum", "count": "sum"}

    def local(self, feature: torch.Tensor, mask: torch.Tensor | None) -> Stats:
        moment, _, count = moment_sums(feature, mask, first=False)
        return {"moment": moment, "count": count}

    def value(self, stats: Stats) -> torch.Tensor:
        area = stats["count"].clamp_min(1e-8)
        moment = stats["moment"] / area
        return gram_loss(StyleStats(moment, moment.new_zeros(moment.shape[-1])), self.target, self.config.normalization)
