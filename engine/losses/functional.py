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


def as_fp32(x: torch.Tensor) -> torch.Tensor:
    """At least float32: half precision is widened, float64 (used by gradient checks) is kept."""
    return x if x.dtype == torch.float64 else x.float()


@dataclass(frozen=True)
class StyleStats:
    """What style losses compare of one layer's features: second-order statistics and a sample of positions.

    moment: (C, C) float32, E[f f^T] over positions (the Gram matrix times C); mean: (C,) float32.
    Both average linearly, so blending styles is a weighted mean of these (a mixture of feature distributions).
    samples: (K, C) float32, the features at K positions (all of them, or a fixed subsample of ``SAMPLE_SIZE``),
    what distribution losses (sliced Wasserstein) compare; sample_weights (K,) summing to 1, None for equal
    weights. A blend of styles is the union of their samples, each style's weighted by its blend weight.
    """

    moment: torch.Tensor
    mean: torch.Tensor
    samples: torch.Tensor | None = None
    sample_weights: torch.Tensor | None = None

    def to(self, device: torch.device) -> StyleStats:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return StyleStats(self.moment.to(device), self.mean.to(device), move(self.samples), move(self.sample_weights))

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
    """f @ f.T in float32 with the gradient (g + g.T) @ f: one matrix product backward, where autograd, not knowing
    that both operands are f, does two. The Gram products are most of the step's work outside the convolutions.

    bf16 features (``--precision bf16``) are taken as they are: the product is formed from their exact float32
    widening, so the Gram matrix is what it was, and the backward product runs in bf16 (at about twice the float32
    rate on CPUs with bf16 dot products, float32 accumulation), handing the network the bf16 gradient it would have
    been cast to anyway. Only the residual g is rounded to bf16 (relative error 2^-9 in the gradient). The float32
    copy of the features lives only during the forward product, not until the backward."""

    @staticmethod
    def forward(ctx: Any, f: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(f)
        wide = as_fp32(f)
        return wide @ wide.T

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (f,) = ctx.saved_tensors
        g = (grad + grad.T).to(f.dtype)
        if _positions_major(f):
            # f is a view of channels_last features: give the gradient that layout too. A (C, M)-contiguous one
            # would reach the network as NCHW, and every ReLU backward and gradient sum mixing the two layouts
            # takes a slow strided path.
            return (f.T @ g).T
        return g @ f


def self_outer(f: torch.Tensor) -> torch.Tensor:
    """f @ f.T in float32 (float64 kept) for a (C, M) matrix, with a single-product backward in f's own dtype for
    float32, float64 and bf16 (fp16 is widened first: its gradients would underflow)."""
    if f.dtype == torch.float16:
        f = f.float()
    out = _SelfOuter.apply(f)
    assert isinstance(out, torch.Tensor)
    return out


def feature_matrix(features: torch.Tensor) -> torch.Tensor:
    """A (1, C, H, W) feature map as a (C, M) matrix, at least float32, without a copy.

    reshape, not [0]: indexing's backward allocates and zero-fills the whole feature map. In either layout this is
    a view: (C, M) contiguous for NCHW, the transpose of a contiguous (M, C) for channels_last."""
    return as_fp32(features).reshape(features.shape[1], -1)


def moment_sums(
    features: torch.Tensor, mask: torch.Tensor | None = None, *, first: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Sums over positions of a (1, C, H, W) feature map, weighted by a (1, 1, H, W) mask in [0, 1] when given:
    (sum m f f^T, sum m f or None when not ``first``, sum m). Sums, not means, so that tiles add up.

    Channels_last features are handled as the (positions, C) matrix they are in memory, so that every gradient
    handed back to the network is channels_last too (see ``_SelfOuter``)."""
    if mask is None and not first:  # the Gram loss's case: the product straight from the features' own dtype
        own = features.reshape(features.shape[1], -1)
        moment = self_outer(own)
        return moment, None, moment.new_tensor(float(own.shape[1]))
    f = feature_matrix(features)
    m = None if mask is None else mask.to(f.dtype).flatten()
    count = f.new_tensor(float(f.shape[1])) if m is None else m.sum()
    if _positions_major(f):
        p = f.T  # (M, C), contiguous
        weighted = p if m is None else p * m[:, None]
        moment = self_outer(f) if m is None else weighted.T @ p
        return moment, weighted.sum(dim=0) if first else None, count
    weighted = f if m is None else f * m
    moment = self_outer(f) if m is None else weighted @ f.T
    return moment, weighted.sum(dim=1) if first else None, count


#: Positions kept of each style layer for distribution losses: a fixed subsample when a layer has more.
SAMPLE_SIZE = 8192


def sample_positions(count: int, size: int = SAMPLE_SIZE) -> torch.Tensor | None:
    """The positions (sorted indices into ``count``) a style target keeps, the same for every run: None for all."""
    if count <= size:
        return None
    return torch.randperm(count, generator=torch.Generator().manual_seed(count)).narrow(0, 0, size).sort().values


def style_stats(features: torch.Tensor, mask: torch.Tensor | None = None) -> StyleStats:
    """Statistics of a (1, C, H, W) feature map, optionally over a (1, 1, H, W) weight mask in [0, 1]."""
    moment, first, count = moment_sums(features, mask)
    assert first is not None
    area = count.clamp_min(1e-8)
    samples = None
    if mask is None:
        f = feature_matrix(features).detach()
        keep = sample_positions(int(f.shape[1]))
        samples = (f if keep is None else f[:, keep]).T.float().contiguous()
    return StyleStats(moment / area, first / area, samples)


def gram(features: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, C) Gram matrices divided by C*H*W, in float32."""
    f = as_fp32(features).flatten(2)
    return f @ f.transpose(1, 2) / (f.shape[1] * f.shape[2])


def content_loss(features: torch.Tensor, target: torch.Tensor, normalization: Normalization = "mean") -> torch.Tensor:
    """Squared error between feature maps of equal shape: mean, or Gatys' half sum."""
    diff = as_fp32(features) - as_fp32(target).to(as_fp32(features).dtype)
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


def _neighbour_differences(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Vertical and horizontal differences of neighbouring pixels of a (N, 3, H, W) image, at least float32."""
    return as_fp32(image[:, :, 1:, :] - image[:, :, :-1, :]), as_fp32(image[:, :, :, 1:] - image[:, :, :, :-1])


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    """Total variation of a (N, 3, H, W) image: mean squared difference of neighbouring pixels."""
    dy, dx = _neighbour_differences(image)
    return dy.pow(2).mean() + dx.pow(2).mean()


def tv_abs_loss(image: torch.Tensor) -> torch.Tensor:
    """Total variation of a (N, 3, H, W) image as jcjohnson/neural-style sums it: the mean absolute difference of
    neighbouring pixels (an L1 penalty removes speckle and keeps edges, where the squared form blurs them)."""
    dy, dx = _neighbour_differences(image)
    return dy.abs().mean() + dx.abs().mean()


def tv_abs_sum_loss(image: torch.Tensor) -> torch.Tensor:
    """jcjohnson/neural-style's total variation: the sum of absolute neighbour differences of 0-255 pixels (its
    size grows with the image's, as the source's does)."""
    dy, dx = _neighbour_differences(image)
    return 255.0 * (dy.abs().sum() + dx.abs().sum())


def unit_directions(channels: int, count: int, seed: int) -> torch.Tensor:
    """(channels, count) random directions of unit length, float32 on the CPU, the same for the same seed."""
    directions = torch.randn(channels, count, generator=torch.Generator().manual_seed(seed))
    return directions / directions.norm(dim=0, keepdim=True)


def sorted_quantiles(
    values: torch.Tensor, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A target's quantile function along the last dim of (N, K) projections (one row per direction): the sorted
    values, and for weighted samples (K,) the cumulative weight at each sorted value's midpoint (N, K) (None for
    equal weights)."""
    ordered, index = values.sort(dim=-1)
    if weights is None:
        return ordered, None
    w = weights.to(values.dtype)[index]
    return ordered, (w.cumsum(dim=-1) - w / 2) / w.sum(dim=-1, keepdim=True)


def quantile_lookup(ordered: torch.Tensor, levels: torch.Tensor | None, q: torch.Tensor) -> torch.Tensor:
    """A target's (N, K) quantile function at levels q ((N, M), or (1, M) for every row), linearly interpolated,
    constant past the ends. ``levels`` None: the k-th sorted value sits at level (k + 1/2) / K."""
    k = ordered.shape[-1]
    q = q.expand(ordered.shape[0], -1)
    if levels is None:
        position = q * k - 0.5
        low = position.floor().clamp(0, k - 1)
        frac = (position - low).clamp(0, 1)
        low_i = low.long()
        high_i = (low_i + 1).clamp_max(k - 1)
    else:
        high_i = torch.searchsorted(levels.contiguous(), q.contiguous()).clamp_max(k - 1)
        low_i = (high_i - 1).clamp_min(0)
        c0, c1 = levels.gather(-1, low_i), levels.gather(-1, high_i)
        gap = c1 - c0
        frac = torch.where(gap > 0, (q - c0) / gap.clamp_min(1e-12), torch.zeros_like(q)).clamp(0, 1)
    v0, v1 = ordered.gather(-1, low_i), ordered.gather(-1, high_i)
    return v0 + frac * (v1 - v0)


def even_levels(count: int, like: torch.Tensor) -> torch.Tensor:
    """(1, count): the levels (i + 1/2) / count of ``count`` equally weighted values."""
    return ((torch.arange(count, device=like.device, dtype=like.dtype) + 0.5) / count)[None]


def sliced_loss(
    projections: torch.Tensor,
    target: torch.Tensor,
    target_levels: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    matched: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sliced Wasserstein loss (Heitz et al. 2021): the mean over N directions of the squared 1-D Wasserstein
    distance between the image's projections (N, M), one row per direction, and the target's quantile function
    (``sorted_quantiles``).

    Sorting matches each of the image's values to the target's value at the same quantile; sample counts may
    differ (the target's quantile function is interpolated). ``weights`` (M,) in [0, 1] weigh the image's
    positions (a mask): a weighted empirical distribution, each value at the midpoint of its cumulative weight.
    ``matched``: the target's values at the image's even levels, when the caller has them (they depend only on M).
    """
    m = int(projections.shape[-1])
    target = target.to(projections.dtype)
    levels_t = _cast(target_levels, projections)
    if weights is None:
        if matched is None:
            matched = quantile_lookup(target, levels_t, even_levels(m, projections))
        out = _SortedDistance.apply(projections, matched.to(projections.dtype))
        assert isinstance(out, torch.Tensor)
        return out
    ordered, index = projections.sort(dim=-1)
    w = weights.to(ordered.dtype)[index]
    total = w.sum(dim=-1, keepdim=True).clamp_min(1e-8)
    levels = (w.cumsum(dim=-1) - w / 2) / total
    found = quantile_lookup(target, levels_t, levels)
    return (w * (ordered - found).pow(2)).sum() / total.sum()


class _SortedDistance(torch.autograd.Function):
    """mean((sort(p) - matched)^2) over (N, M) projections, sorted a few rows at a time, with its gradient worked out
    in the forward pass: 2 (p - matched[rank of p]) / (N M). What is kept for the backward pass is that gradient
    (4 bytes a value) instead of autograd's sort indices and sorted values (12), and no scatter runs backward."""

    ROWS = 8  # directions sorted at a time: the sort's temporaries stay a few rows' worth

    @staticmethod
    def forward(ctx: Any, projections: torch.Tensor, matched: torch.Tensor) -> torch.Tensor:
        n, m = projections.shape
        total = projections.new_zeros((), dtype=torch.float64 if projections.dtype == torch.float64 else torch.float32)
        grad = torch.empty_like(projections)
        for start in range(0, n, _SortedDistance.ROWS):
            rows = slice(start, start + _SortedDistance.ROWS)
            ordered, index = projections[rows].sort(dim=-1)
            diff = ordered - matched[rows]
            total = total + diff.pow(2).sum()
            grad[rows].scatter_(-1, index, diff * (2.0 / (n * m)))
        ctx.save_for_backward(grad)
        return total / (n * m)

    @staticmethod
    def backward(ctx: Any, upstream: torch.Tensor) -> tuple[torch.Tensor, None]:
        (grad,) = ctx.saved_tensors
        return grad * upstream.to(grad.dtype), None


def _cast(t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    return None if t is None else t.to(like.dtype)
