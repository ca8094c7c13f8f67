"""The sliced Wasserstein style loss against its formula, its gradient against finite differences, its symmetries,
and every style loss's parts joined against the whole (the contract the tiled objective relies on)."""

from __future__ import annotations

import pytest
import torch

from nst_engine.config import StyleConfig
from nst_engine.errors import ConfigError
from nst_engine.losses.functional import StyleStats, sliced_loss, sorted_quantiles, style_stats, unit_directions
from nst_engine.losses.registry import STYLE_LOSSES, check_style_loss, style_loss_class
from nst_engine.losses.sliced import SlicedLoss
from nst_engine.losses.terms import StyleTerm, Window
from nst_engine.targets import blend


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_equal_counts_give_the_mean_squared_difference_of_sorted_projections() -> None:
    image, target = _rand(6, 50), _rand(6, 50, seed=1)  # a row per direction
    expected = sum(
        sum((a - b) ** 2 for a, b in zip(sorted(image[n].tolist()), sorted(target[n].tolist()), strict=True))
        for n in range(6)
    ) / (50 * 6)
    ordered, levels = sorted_quantiles(target)
    assert levels is None
    torch.testing.assert_close(sliced_loss(image, ordered), torch.tensor(expected, dtype=torch.float64))


def test_zero_for_the_same_set_in_any_order_and_invariant_to_permuting_positions() -> None:
    image = _rand(5, 40)
    shuffled = image[:, torch.randperm(40, generator=torch.Generator().manual_seed(3))]
    ordered, _ = sorted_quantiles(image)
    assert float(sliced_loss(shuffled, ordered)) == 0.0
    target, _ = sorted_quantiles(_rand(5, 40, seed=2))
    assert float(sliced_loss(image, target)) == float(sliced_loss(shuffled, target)) > 0


def test_unequal_counts_are_matched_by_quantiles_not_cropped() -> None:
    image, target = _rand(4, 30), _rand(4, 30, seed=1)
    twice = torch.cat([target, target], dim=1)  # the same distribution with twice the samples
    once, _ = sorted_quantiles(target)
    doubled, _ = sorted_quantiles(twice)
    torch.testing.assert_close(sliced_loss(image, doubled), sliced_loss(image, once))
    # Fewer target samples than positions: the quantile function is interpolated, not the image cropped.
    few, _ = sorted_quantiles(target[:, :7])
    assert float(sliced_loss(image, few)) > 0 and torch.isfinite(sliced_loss(image, few))


def test_weights_select_positions_and_weighted_targets_pool_styles() -> None:
    image, target = _rand(3, 40), _rand(3, 25, seed=1)
    ordered, _ = sorted_quantiles(target)
    mask = (torch.arange(40) % 3 == 0).double()
    torch.testing.assert_close(sliced_loss(image, ordered, None, mask), sliced_loss(image[:, mask > 0], ordered))
    torch.testing.assert_close(sliced_loss(image, ordered, None, torch.ones(40, dtype=torch.float64)),
                               sliced_loss(image, ordered))  # fmt: skip
    # Equal explicit weights are the unweighted target.
    ordered_w, levels = sorted_quantiles(target, torch.full((25,), 1 / 25, dtype=torch.float64))
    assert levels is not None
    torch.testing.assert_close(sliced_loss(image, ordered_w, levels), sliced_loss(image, ordered), rtol=1e-6, atol=1e-9)


def test_gradient_matches_finite_differences_in_float64() -> None:
    target, _ = sorted_quantiles(_rand(3, 17, seed=1))
    image = _rand(3, 11).requires_grad_(True)
    weights = torch.rand(11, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: sliced_loss(x, target), (image,))
    assert torch.autograd.gradcheck(lambda x: sliced_loss(x, target, None, weights), (image,))


def _stats(channels: int = 6, seed: int = 1) -> StyleStats:
    return style_stats(_rand(1, channels, 9, 7, seed=seed))


def test_the_sliced_term_draws_directions_from_the_seed_and_redraws_only_when_asked() -> None:
    fixed = SlicedLoss(_stats(), StyleConfig(style_loss="sliced", sw_projections=8), "relu1_1")
    first = fixed.directions.clone()
    fixed.draw(7)
    assert torch.equal(first, fixed.directions) and not fixed.redraws
    config = StyleConfig(style_loss="sliced", sw_projections=8, seed=5, sw_redraw=1)
    a, b = SlicedLoss(_stats(), config, "relu1_1"), SlicedLoss(_stats(), config, "relu1_1")
    a.draw(3)
    b.draw(3)
    assert torch.equal(a.directions, b.directions)
    first = a.directions.clone()
    a.draw(4)
    assert not torch.equal(first, a.directions)
    torch.testing.assert_close(a.directions.norm(dim=0), torch.ones(8))
    other = SlicedLoss(_stats(), config.replace(seed=6), "relu1_1")
    other.draw(3)
    assert not torch.equal(other.directions, b.directions)
    assert unit_directions(6, 8, 1).shape == (6, 8)


@pytest.mark.parametrize("name", list(STYLE_LOSSES))
@pytest.mark.parametrize("masked", [False, True])
def test_every_style_loss_joined_over_parts_equals_the_whole(name: str, masked: bool) -> None:
    """What the tiled objective relies on: local statistics of two halves, joined as ``combine`` says, give the
    whole map's value and gradient."""
    config = StyleConfig(style_loss=name, sw_projections=16)
    mask = torch.rand(1, 1, 10, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64) if masked else None
    term = StyleTerm("relu1_1", [style_loss_class(name)(_stats(), config, "relu1_1")], [mask], 1.0)
    feature = _rand(1, 6, 10, 8, seed=3).requires_grad_(True)
    whole = term.value(term.local(feature, Window.whole(feature)))
    parts = [term.local(feature[..., r0:r1, :], Window((10, 8), (r0, r1), (0, 8))) for r0, r1 in ((0, 4), (4, 10))]
    joined = {
        k: torch.cat([p[k] for p in parts], dim=-1) if term.combine[k] == "cat" else parts[0][k] + parts[1][k]
        for k in parts[0]
    }
    split = term.value(joined)
    torch.testing.assert_close(split, whole)
    (g_whole,) = torch.autograd.grad(whole, feature)
    (g_split,) = torch.autograd.grad(split, feature)
    torch.testing.assert_close(g_split, g_whole)


def test_a_blend_pools_both_styles_samples_by_weight() -> None:
    a, b = {"relu1_1": _stats(seed=1)}, {"relu1_1": _stats(seed=2)}
    mixed = blend([a, b], (0.25, 0.75))["relu1_1"]
    assert mixed.samples is not None and mixed.sample_weights is not None
    assert mixed.samples.shape[0] == 2 * 63
    assert float(mixed.sample_weights[:63].sum()) == pytest.approx(0.25)
    assert float(mixed.sample_weights.sum()) == pytest.approx(1.0)


def test_an_unknown_style_loss_is_refused_with_a_suggestion() -> None:
    assert check_style_loss("sliced") == "sliced"
    with pytest.raises(ConfigError, match="did you mean 'sliced'"):
        check_style_loss("slcied")
    with pytest.raises(ConfigError, match="--style-loss must be one of gram, wasserstein, sliced"):
        StyleConfig(style_loss="swd")
