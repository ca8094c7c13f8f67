"""The loss the optimiser minimises: weighted content, style and total-variation terms over a torch VGG.

Loss terms stay small pure functions (``engine.losses``); this module only routes features to them and
weighs them (crowsonkb's Scale(LayerApply(loss))). Terms are returned by name: ``content.relu4_2``,
``style.relu1_1``, ``tv``, plus the sums ``content``, ``style`` and ``total``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from nst_engine.config import StyleConfig
from nst_engine.losses import (
    StyleStats,
    content_loss,
    gram_loss,
    sqrtm_psd,
    style_stats,
    tv_loss,
    wasserstein_loss,
)
from nst_engine.resize import resize
from nst_engine.targets import StyleRegion
from nst_engine.vgg import VGGFeatures


class _NormalizeGrad(torch.autograd.Function):
    """Identity forward; backward divides the gradient by its L1 norm (jcjohnson's -normalize_gradients)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad / (grad.abs().sum() + 1e-8)


def normalize_grad(x: torch.Tensor) -> torch.Tensor:
    out = _NormalizeGrad.apply(x)
    assert isinstance(out, torch.Tensor)
    return out


def compiled(net: VGGFeatures) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """torch.compile of the network, made once per module and kept on it (recompiling per scale would waste
    minutes). Dynamic shapes: one compilation serves every scale of a multi-scale run."""
    if net.compiled_forward is None:
        # object.__setattr__: a compiled wrapper is itself a Module; registering it would make a cycle.
        object.__setattr__(net, "compiled_forward", torch.compile(net, dynamic=True))
    assert net.compiled_forward is not None
    return net.compiled_forward


class Objective(nn.Module):
    """Maps an image (1, 3, H, W) in [0, 1] to named, weighted loss terms (float32 scalars)."""

    def __init__(
        self,
        net: VGGFeatures,
        content: dict[str, torch.Tensor],
        regions: Sequence[StyleRegion],
        config: StyleConfig,
    ) -> None:
        super().__init__()
        self.net = net
        self.config = config
        self.content = {k: v.detach() for k, v in content.items()}
        self.regions = list(regions)
        self.layer_weights = config.layer_weights
        # Square roots of target covariances never change: compute them once, not every step.
        self.cov_sqrt: list[dict[str, torch.Tensor]] = []
        if config.style_loss == "wasserstein":
            self.cov_sqrt = [{k: sqrtm_psd(s.covariance) for k, s in r.target.items()} for r in self.regions]
        self._masks: dict[tuple[int, str], torch.Tensor] = {}
        self.channels_last = False
        self.forward_net: Callable[[torch.Tensor], dict[str, torch.Tensor]] = net
        # Losses on features / s: content terms scale as s^2, Gram terms as s^4 and Wasserstein terms as s^2, so
        # dividing the weights is the same as dividing the features, without touching the cached targets.
        scale = net.feature_scale if config.feature_units == "normalized" else 1.0
        self.content_factor = config.content_weight / scale**2
        self.style_factor = config.style_weight / scale ** (2 if config.style_loss == "wasserstein" else 4)
        #: Video: earlier results warped into this frame, each with its certainty (1, 1, H, W); see ``guide``.
        self.temporal: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.temporal_weight = 0.0

    def guide(self, warped: Sequence[tuple[torch.Tensor, torch.Tensor]], weight: float) -> Objective:
        """Add Ruder et al.'s temporal term: ``weight`` x the sum over (w, c) of mean(c * (x - w)^2), pixels in
        [0, 1]. It is the term ``temporal`` (and part of ``total``)."""
        self.temporal = [(w.detach(), c.detach()) for w, c in warped]
        self.temporal_weight = float(weight)
        return self

    def _pixel_terms(self, image: torch.Tensor, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The terms on the pixels themselves (total variation, temporal), added to ``terms`` with the sums."""
        content_sum, style_sum = terms.pop("content"), terms.pop("style")
        tv = self.config.tv_weight * tv_loss(image)
        total = content_sum + style_sum + tv
        terms.update(content=content_sum, style=style_sum, tv=tv)
        if self.temporal and self.temporal_weight:
            x = image.float()
            temporal = sum((c * (x - w).pow(2)).mean() for w, c in self.temporal)
            assert isinstance(temporal, torch.Tensor)
            terms["temporal"] = self.temporal_weight * temporal
            total = total + terms["temporal"]
        terms["total"] = total
        return terms

    def accelerate(self, device: torch.device) -> Objective:
        """Memory format and compilation for speed; the numbers stay those of the fp32 network within tolerance."""
        cfg = self.config
        self.channels_last = cfg.channels_last
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # stub lacks it
            # Content targets in the features' layout, or the content gradient reaches the network as NCHW.
            self.content = {k: v.contiguous(memory_format=torch.channels_last) for k, v in self.content.items()}
        if cfg.compile:
            self.forward_net = compiled(self.net)
        return self

    def _autocast(self, image: torch.Tensor) -> Any:
        precision = self.config.precision
        if precision in ("bf16", "fp16"):
            dtype = torch.bfloat16 if precision == "bf16" else torch.float16
            return torch.autocast(device_type=image.device.type, dtype=dtype)
        return nullcontext()

    def _mask(self, index: int, layer: str, feature: torch.Tensor) -> torch.Tensor | None:
        mask = self.regions[index].mask
        if mask is None:
            return None
        key = (index, layer)
        if key not in self._masks or self._masks[key].shape[-2:] != feature.shape[-2:]:
            self._masks[key] = resize(
                mask.to(feature.device), int(feature.shape[-2]), int(feature.shape[-1]), kind="mask"
            )
        return self._masks[key]

    def _style_term(self, feature: torch.Tensor, layer: str) -> torch.Tensor:
        total = feature.new_zeros((), dtype=torch.float32)
        for index, region in enumerate(self.regions):
            stats: StyleStats = style_stats(feature, self._mask(index, layer, feature))
            target = region.target[layer]
            if self.config.style_loss == "wasserstein":
                total = total + wasserstein_loss(stats, target, self.cov_sqrt[index][layer])
            else:
                total = total + gram_loss(stats, target, self.config.normalization)
        return total

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.config
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        with self._autocast(image):
            features = self.forward_net(image)
        terms: dict[str, torch.Tensor] = {}
        content_sum = image.new_zeros((), dtype=torch.float32)
        style_sum = image.new_zeros((), dtype=torch.float32)
        for layer in cfg.content_layers:
            f = normalize_grad(features[layer]) if cfg.normalize_gradients else features[layer]
            term = self.content_factor * content_loss(f, self.content[layer], cfg.normalization)
            terms[f"content.{layer}"] = term
            content_sum = content_sum + term
        for layer in cfg.style_layers:
            f = normalize_grad(features[layer]) if cfg.normalize_gradients else features[layer]
            term = self.style_factor * self.layer_weights[layer] * self._style_term(f, layer)
            terms[f"style.{layer}"] = term
            style_sum = style_sum + term
        terms.update(content=content_sum, style=style_sum)
        return self._pixel_terms(image, terms)
