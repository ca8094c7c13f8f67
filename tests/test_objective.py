"""The objective: each term against its formula (the functional losses on the network's features, scaled as
``build_terms`` says) and the sums. The tiled objective against the whole one, per loss: tests/test_tiling.py."""

from __future__ import annotations

import pytest
import torch

from nst_engine.config import StyleConfig
from nst_engine.losses.functional import content_loss, gram_loss, style_stats, tv_abs_loss
from nst_engine.losses.registry import STYLE_LOSSES
from nst_engine.objective import Objective
from nst_engine.targets import StyleRegion
from nst_engine.vgg import VGGFeatures
from nst_engine.weights import random_weights
from tests.conftest import gradient_image

LAYERS = {"content_layers": ("relu2_2",), "style_layers": ("relu1_1", "relu2_1")}


def _net(config: StyleConfig, scale: float = 1.0) -> VGGFeatures:
    net = VGGFeatures(config.layers)
    net.load_features(random_weights(0).state)
    net.feature_scale = scale
    return net


def _objective(config: StyleConfig, scale: float = 1.0) -> tuple[Objective, VGGFeatures]:
    net = _net(config, scale)
    with torch.no_grad():
        content = net(gradient_image(32, 32, 1))
        style = net(gradient_image(32, 32, 2))
    region = StyleRegion({layer: style_stats(style[layer]) for layer in config.style_layers})
    targets = {layer: content[layer] for layer in config.content_layers}
    return Objective.of(net, targets, [region], config), net


@pytest.mark.parametrize("units", ["raw", "normalized"])
def test_each_term_is_its_formula_on_the_features_and_the_total_their_sum(units: str) -> None:
    config = StyleConfig(size=32, feature_units=units, style_layer_weights=(1.0, 3.0), tv_weight=0.5, **LAYERS)
    scale = 7.0
    objective, net = _objective(config, scale)
    image = gradient_image(32, 32, 3)
    terms = objective(image)
    with torch.no_grad():
        f, c, s = net(image), net(gradient_image(32, 32, 1)), net(gradient_image(32, 32, 2))
    k = scale if units == "normalized" else 1.0
    content = config.content_weight * content_loss(f["relu2_2"] / k, c["relu2_2"] / k)
    torch.testing.assert_close(terms["content.relu2_2"], content, rtol=1e-5, atol=0)
    for layer, share in (("relu1_1", 0.25), ("relu2_1", 0.75)):
        expected = config.style_weight * share * gram_loss(style_stats(f[layer] / k), style_stats(s[layer] / k))
        torch.testing.assert_close(terms[f"style.{layer}"], expected, rtol=1e-4, atol=0)
    torch.testing.assert_close(terms["tv"], 0.5 * tv_abs_loss(image))  # the default norm, l1
    torch.testing.assert_close(terms["style"], terms["style.relu1_1"] + terms["style.relu2_1"])
    torch.testing.assert_close(terms["total"], terms["content"] + terms["style"] + terms["tv"])


def test_every_style_loss_scales_the_one_style_weight_by_its_registry_entry() -> None:
    base = StyleConfig(size=32, style_weight=2.0, **LAYERS)
    for name, entry in STYLE_LOSSES.items():
        objective, _ = _objective(base.replace(style_loss=name))
        weights = [t.weight for t in objective.terms.features if t.name.startswith("style.")]
        assert weights == pytest.approx([2.0 * entry.relative_weight * 0.5] * 2), name
