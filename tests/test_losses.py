"""Losses against their formulas, written out independently with loops and explicit sums."""

import math

import torch

from nst_engine.losses.functional import (
    StyleStats,
    content_loss,
    gram,
    gram_loss,
    self_outer,
    sqrtm_psd,
    style_stats,
    tv_loss,
    wasserstein_loss,
)


def _features(c: int = 4, h: int = 3, w: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, c, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_gram_matches_explicit_sum() -> None:
    f = _features()
    c, m = 4, 15
    flat = f[0].reshape(c, m)
    expected = torch.zeros(c, c, dtype=torch.float64)
    for i in range(c):
        for j in range(c):
            expected[i, j] = sum(flat[i, k] * flat[j, k] for k in range(m)) / (c * m)
    torch.testing.assert_close(gram(f)[0], expected)
    torch.testing.assert_close(style_stats(f).gram, expected)


def test_self_outer_gradient_is_exact() -> None:
    f = _features(c=5, h=3, w=4)[0].reshape(5, 12).requires_grad_(True)
    assert torch.autograd.gradcheck(self_outer, (f,))
    # Against autograd's own two-product gradient, through a non-symmetric downstream weighting.
    weight = torch.randn(5, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (ours,) = torch.autograd.grad((self_outer(f) * weight).sum(), f)
    (plain,) = torch.autograd.grad(((f @ f.T) * weight).sum(), f)
    torch.testing.assert_close(ours, plain)


def test_style_stats_work_on_channels_last_features() -> None:
    f = _features(c=4, h=3, w=5)
    nhwc = f.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(style_stats(nhwc).gram, style_stats(f).gram)


def test_channels_last_gradients_keep_the_layout_and_the_values() -> None:
    # A gradient in the other layout still has the right values, but every ReLU backward and gradient sum it
    # meets then runs a slow mixed-layout path: the losses must hand back channels_last gradients.
    f = _features(c=4, h=3, w=5)
    target, style = _features(c=4, h=3, w=5, seed=7), style_stats(_features(c=4, h=3, w=5, seed=8))
    mask = torch.rand(1, 1, 3, 5, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    cov_sqrt = sqrtm_psd(style.covariance)
    losses = {
        "gram": lambda x: gram_loss(style_stats(x), style) + content_loss(x, target),
        "masked gram": lambda x: gram_loss(style_stats(x, mask), style),
        "wasserstein": lambda x: wasserstein_loss(style_stats(x), style, cov_sqrt),
        "masked wasserstein": lambda x: wasserstein_loss(style_stats(x, mask), style, cov_sqrt),
    }
    for kind, loss in losses.items():
        grads = {}
        for name, layout in (("nchw", torch.contiguous_format), ("nhwc", torch.channels_last)):
            x = f.contiguous(memory_format=layout).requires_grad_(True)
            (grads[name],) = torch.autograd.grad(loss(x), x)
        assert grads["nhwc"].is_contiguous(memory_format=torch.channels_last), kind
        assert grads["nchw"].is_contiguous(), kind
        torch.testing.assert_close(grads["nhwc"], grads["nchw"], msg=kind)


def test_content_loss_mean_and_gatys() -> None:
    a, b = _features(seed=1), _features(seed=2)
    diff = (a - b).flatten()
    assert math.isclose(float(content_loss(a, b)), float(sum(d * d for d in diff) / diff.numel()), rel_tol=1e-12)
    assert math.isclose(float(content_loss(a, b, "gatys")), float(0.5 * sum(d * d for d in diff)), rel_tol=1e-12)


def test_gram_loss_gatys_normalisation_matches_paper() -> None:
    a, b = _features(seed=3), _features(seed=4)
    n, m = 4, 15
    fa, fb = a[0].reshape(n, m), b[0].reshape(n, m)
    g, t = fa @ fa.T, fb @ fb.T  # unnormalised Gram matrices, as in the paper
    paper = float(((g - t) ** 2).sum() / (4 * n**2 * m**2))
    ours = float(gram_loss(style_stats(a), style_stats(b), "gatys"))
    assert math.isclose(ours, paper, rel_tol=1e-10)
    mean_form = float(gram_loss(style_stats(a), style_stats(b)))
    assert math.isclose(mean_form, paper * 4 / n**2, rel_tol=1e-10)


def test_masked_stats_use_only_the_masked_positions() -> None:
    f = _features(h=2, w=2)
    mask = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]], dtype=torch.float64)
    stats = style_stats(f, mask)
    kept = f[0][:, :, 0]  # (C, 2): the left column
    torch.testing.assert_close(stats.moment, kept @ kept.T / 2)
    torch.testing.assert_close(stats.mean, kept.mean(dim=1))


def test_tv_loss_formula() -> None:
    x = _features(c=3, h=4, w=6)
    dy = [(x[0, c, i + 1, j] - x[0, c, i, j]) ** 2 for c in range(3) for i in range(3) for j in range(6)]
    dx = [(x[0, c, i, j + 1] - x[0, c, i, j]) ** 2 for c in range(3) for i in range(4) for j in range(5)]
    assert math.isclose(float(tv_loss(x)), float(sum(dy) / len(dy) + sum(dx) / len(dx)), rel_tol=1e-12)


def test_wasserstein_zero_for_identical_and_closed_form_for_diagonal() -> None:
    f = _features(c=3, h=8, w=8)
    s = style_stats(f)
    assert abs(float(wasserstein_loss(s, s, sqrtm_psd(s.covariance)))) < 1e-6
    # Diagonal Gaussians: W2^2 = |mu1 - mu2|^2 + sum (sqrt(v1) - sqrt(v2))^2.
    mu1, mu2 = torch.tensor([0.0, 1.0], dtype=torch.float64), torch.tensor([2.0, -1.0], dtype=torch.float64)
    v1, v2 = torch.tensor([1.0, 4.0], dtype=torch.float64), torch.tensor([9.0, 1.0], dtype=torch.float64)
    a = StyleStats(torch.diag(v1) + torch.outer(mu1, mu1), mu1)
    b = StyleStats(torch.diag(v2) + torch.outer(mu2, mu2), mu2)
    expected = float(((mu1 - mu2) ** 2).sum() + ((v1.sqrt() - v2.sqrt()) ** 2).sum()) / 2
    assert math.isclose(float(wasserstein_loss(a, b, sqrtm_psd(b.covariance))), expected, rel_tol=1e-6)


def test_half_precision_features_give_finite_fp32_losses() -> None:
    big = torch.full((1, 8, 16, 16), 300.0, dtype=torch.float16)  # squares overflow fp16 (max 65504)
    stats = style_stats(big)
    assert stats.moment.dtype == torch.float32 and torch.isfinite(stats.moment).all()
    assert torch.isfinite(gram_loss(stats, style_stats(big * 0.5)))
