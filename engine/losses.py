"""Loss terms as pure functions on tensors, plus the statistics a style target is made of.

Normalisation (differs from Gatys et al. 2016, as in jcjohnson/neural-style and the PyTorch tutorial):
the Gram matrix is divided by the number of feature elements C*H*W and losses are means, not sums.
Against Gatys' E_l = 1/(4 N^2 M^2) * sum (G - A)^2 this is a per-layer factor 4/N_l^2, and the content
loss is mean((F - P)^2) instead of 1/2 * sum((F - P)^2). ``normalization="gatys"`` gives the paper's.
All statistics and losses are computed in float32 even when the features come in bf16 or fp16:
Gram matrices overflow fp16.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from nst_engine.layers import Normalization


def _wide(x: torch.Tensor) -> torch.Tensor:
    """At least float32: half precision is widened, float64 (used by gradient checks) is kept."""
    return x if x.dtype == torch.float64 else x.float()


@dataclass(frozen=True)
class StyleStats:
    """Second-order statistics of one layer's features, what style losses compare.

    moment: (C, C) float32, E[f f^T] over positions (the Gram matrix times C); mean: (C,) float32.
    Both average linearly, so blending styles is a weighted mean of these (a mixture of feature distributions).
    """

    moment: torch.Tensor
    mean: torch.Tensor

    @property
    def gram(self) -> torch.Tensor:
        return self.moment / self.moment.shape[-1]

    @property
    def covariance(self) -> torch.Tensor:
        return self.moment - torch.outer(self.mean, self.mean)


def _positions_major(f: torch.Tensor) -> bool:
    """Whether a (C, M) feature matrix is the transpose of a contiguous (M, C) one (channels_last features)."""
    return f.stride(0) == 1 and f.shape[1] > 1


class _SelfOuter(torch.autograd.Function):
    """f @ f.T with the gradient (g + g.T) @ f: one matrix product backward, where autograd, not knowing that
    both operands are f, does two. The Gram products are most of the step's work outside the convolutions."""

    @staticmethod
    def forward(ctx: Any, f: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(f)
        return f @ f.T

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (f,) = ctx.saved_tensors
        g = grad + grad.T
        if _positions_major(f):
            # f is a view of channels_last features: give the gradient that layout too. A (C, M)-contiguous one
            # would reach the network as NCHW, and every ReLU backward and gradient sum mixing the two layouts
            # takes a slow strided path.
            return (f.T @ g).T
        return g @ f


def self_outer(f: torch.Tensor) -> torch.Tensor:
    """f @ f.T for a (C, M) matrix, with a single-product backward."""
    out = _SelfOuter.apply(f)
    assert isinstance(out, torch.Tensor)
    return out


def style_stats(features: torch.Tensor, mask: torch.Tensor | None = None) -> StyleStats:
    """Statistics of a (1, C, H, W) feature map, optionally over a (1, 1, H, W) weight mask in [0, 1].

    Channels_last features are handled as the (positions, C) matrix they are in memory, so that every gradient
    handed back to the network is channels_last too (see ``_SelfOuter``)."""
    # reshape, not [0]: indexing's backward allocates and zero-fills the whole feature map. In either layout
    # this is a view: (C, M) contiguous for NCHW, the transpose of a contiguous (M, C) for channels_last.
    f = _wide(features).reshape(features.shape[1], -1)
    m = None if mask is None else mask.to(f.dtype).flatten()
    if _positions_major(f):
        p = f.T  # (M, C), contiguous
        weighted = p if m is None else p * m[:, None]
        area = float(p.shape[0]) if m is None else m.sum().clamp_min(1e-8)
        moment = self_outer(f) if m is None else weighted.T @ p
        return StyleStats(moment / area, weighted.sum(dim=0) / area)
    weighted = f if m is None else f * m
    area = float(f.shape[1]) if m is None else m.sum().clamp_min(1e-8)
    moment = self_outer(f) if m is None else weighted @ f.T
    return StyleStats(moment / area, weighted.sum(dim=1) / area)


def gram(features: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, C) Gram matrices divided by C*H*W, in float32."""
    f = _wide(features).flatten(2)
    return f @ f.transpose(1, 2) / (f.shape[1] * f.shape[2])


def content_loss(features: torch.Tensor, target: torch.Tensor, normalization: Normalization = "mean") -> torch.Tensor:
    """Squared error between feature maps of equal shape: mean, or Gatys' half sum."""
    diff = _wide(features) - _wide(target).to(_wide(features).dtype)
    if normalization == "gatys":
        return 0.5 * diff.pow(2).sum()
    # sum / count, not mean: mean's backward materialises an NCHW gradient, which for channels_last features
    # sends every gradient of that layer's backward down a slow mixed-layout path.
    return diff.pow(2).sum() / diff.numel()


def gram_loss(stats: StyleStats, target: StyleStats, normalization: Normalization = "mean") -> torch.Tensor:
    """Mean squared difference of Gram matrices; Gatys' 1/(4 N^2 M^2) sum form with ``"gatys"``."""
    loss = (stats.gram - target.gram).pow(2).mean()
    if normalization == "gatys":
        channels = stats.moment.shape[-1]
        return loss * channels**2 / 4.0
    return loss


def _trace_sqrt_product(a: torch.Tensor, b_sqrt: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """tr(sqrtm(B^1/2 A B^1/2)) for symmetric PSD A, B: the sum of square roots of its eigenvalues."""
    product = b_sqrt @ a @ b_sqrt
    eigenvalues = torch.linalg.eigvalsh((product + product.T) / 2)
    return eigenvalues.clamp_min(eps).sqrt().sum()


def sqrtm_psd(matrix: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a PSD matrix (float32)."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T


def wasserstein_loss(stats: StyleStats, target: StyleStats, target_cov_sqrt: torch.Tensor) -> torch.Tensor:
    """Squared 2-Wasserstein distance between Gaussians fitted to two feature distributions.

    ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr(sqrtm(S2^1/2 S1 S2^1/2)), divided by C so that layers of
    different width weigh alike (as crowsonkb/style-transfer-pytorch's style loss does).
    """
    cov, target_cov = stats.covariance, target.covariance
    mean_term = (stats.mean - target.mean).pow(2).sum()
    cov_term = cov.trace() + target_cov.trace() - 2 * _trace_sqrt_product(cov, target_cov_sqrt)
    return (mean_term + cov_term.clamp_min(0)) / stats.mean.shape[0]


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    """Total variation of a (N, 3, H, W) image: mean squared difference of neighbouring pixels."""
    dy = image[:, :, 1:, :] - image[:, :, :-1, :]
    dx = image[:, :, :, 1:] - image[:, :, :, :-1]
    return _wide(dy).pow(2).mean() + _wide(dx).pow(2).mean()
