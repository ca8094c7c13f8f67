"""Pixel terms against their formulas, the terms a config builds, and the starts a run can take."""

from __future__ import annotations

import pytest
import torch

from nst_engine.config import StyleConfig
from nst_engine.errors import ConfigError
from nst_engine.losses.functional import style_stats
from nst_engine.losses.terms import ContentTerm, SmoothnessTerm, StyleTerm, TemporalTerm, build_terms
from nst_engine.stylize import MEAN_COLOUR, stylize
from nst_engine.targets import DirectTargets, StyleRegion
from nst_engine.vgg import VGGFeatures
from nst_engine.weights import random_weights
from tests.conftest import gradient_image


def _image(seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, 5, 7, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_smoothness_forms_match_their_formulas() -> None:
    x = _image()
    dy, dx = x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]
    torch.testing.assert_close(SmoothnessTerm(1.0, "l2")(x), dy.pow(2).mean() + dx.pow(2).mean())
    torch.testing.assert_close(SmoothnessTerm(1.0, "l1")(x), dy.abs().mean() + dx.abs().mean())
    torch.testing.assert_close(SmoothnessTerm(1.0, "l1-sum")(x), 255 * (dy.abs().sum() + dx.abs().sum()))


def test_an_absolute_smoothness_term_penalises_an_edge_less_than_speckle_of_the_same_squared_cost() -> None:
    edge = torch.zeros(1, 3, 16, 16, dtype=torch.float64)
    edge[..., 8:] = 1.0
    speckle = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    l2, l1 = SmoothnessTerm(1.0, "l2"), SmoothnessTerm(1.0, "l1")
    speckle = speckle * (l2(edge) / l2(speckle)).sqrt()  # the same squared cost
    torch.testing.assert_close(l2(speckle), l2(edge))
    assert float(l1(edge)) < 0.5 * float(l1(speckle))


def test_the_config_builds_one_term_per_layer_with_the_loss_it_names() -> None:
    config = StyleConfig(style_loss="sliced", content_layers=("relu2_2",), style_layers=("relu1_1", "relu2_1"))
    feature = {"relu1_1": torch.rand(1, 64, 8, 8), "relu2_1": torch.rand(1, 128, 4, 4)}
    target = {k: style_stats(v) for k, v in feature.items()}
    warped = [(gradient_image(8, 8), torch.ones(1, 1, 8, 8))]
    terms = build_terms(config, {"relu2_2": torch.rand(1, 128, 4, 4)}, [StyleRegion(target)], temporal=(warped, 3.0))
    assert [t.name for t in terms.features] == ["content.relu2_2", "style.relu1_1", "style.relu2_1"]
    assert isinstance(terms.features[0], ContentTerm) and isinstance(terms.features[1], StyleTerm)
    assert type(terms.features[1].losses[0]).__name__ == "SlicedLoss"
    assert [type(t) for t in terms.pixels] == [SmoothnessTerm, TemporalTerm] and terms.pixels[1].weight == 3.0
    with pytest.raises(ConfigError, match="did you mean 'sliced'"):
        StyleConfig(style_loss="slice")


def test_init_mean_starts_from_the_imagenet_mean_colour() -> None:
    config = StyleConfig(size=32, steps=0, init="mean", content_layers=("relu2_2",), style_layers=("relu1_1",))
    net = VGGFeatures(config.layers)
    net.load_features(random_weights(0).state)
    result = stylize(gradient_image(32, 32, 1), [gradient_image(32, 32, 2)], config=config, net=net,
                     targets=DirectTargets(net))  # fmt: skip
    torch.testing.assert_close(result.image.mean(dim=(0, 2, 3)), MEAN_COLOUR, atol=1e-4, rtol=0)
    assert float(result.image.std(dim=(2, 3)).max()) < 1e-4  # faint noise, not a speckled start
