"""Tiled optimisation (engine.tiling): exact loss and gradient with the exact halo, stitched targets, the planner,
seams, and the errors of bad tile settings. Shallow layers keep the tiles many and the tests fast."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nst_engine.config import StyleConfig
from nst_engine.errors import ConfigError
from nst_engine.layers import deepest, stride
from nst_engine.losses.functional import style_stats
from nst_engine.objective import Objective
from nst_engine.stylize import stylize
from nst_engine.targets import DirectTargets, StyleRegion, content_target, style_target
from nst_engine.tiling import Plan, TiledEncoder, TiledObjective, exact_halo, plan_tiles, receptive_radius, tile_grid
from nst_engine.vgg import VGGFeatures
from nst_engine.weights import random_weights
from tests.conftest import gradient_image

SHALLOW = {"content_layers": ("relu2_2",), "style_layers": ("relu1_1", "relu2_1", "relu3_1")}


def _net(config: StyleConfig, dtype: torch.dtype = torch.float64) -> VGGFeatures:
    net = VGGFeatures(config.layers)
    net.load_features(random_weights(0).state)
    return net.to(dtype)


def test_receptive_radius_and_exact_halo() -> None:
    assert receptive_radius(("relu1_1",)) == 1 and receptive_radius(("relu3_1",)) == 13
    assert receptive_radius(("relu5_1",)) == 85 and exact_halo(("relu5_1",)) == 96
    assert receptive_radius(("relu5_1",), "vgg16") < 85


def _pair(config: StyleConfig, h: int, w: int, masked: bool, gray: bool):  # type: ignore[no-untyped-def]
    net = _net(config)
    content, style = gradient_image(h, w, 1).double(), gradient_image(64, 64, 2).double()
    if gray:
        content = content.mean(dim=1, keepdim=True).expand(1, 3, h, w).contiguous()
    with torch.no_grad():
        c_t, s_t = content_target(net, content, config.content_layers), style_target(net, style, config.style_layers)
    if masked:
        left = torch.zeros(1, 1, h, w, dtype=torch.float64)
        left[..., : w // 3] = 1
        regions = [StyleRegion(s_t, left), StyleRegion(s_t, 1 - left)]
    else:
        regions = [StyleRegion(s_t)]
    # A little noise: the smooth test image has rows of equal pixels, so equal features, and a sorted loss's gradient
    # is not unique at ties (whole and tiled may order tied positions differently).
    noise = torch.rand(content.shape, generator=torch.Generator().manual_seed(7), dtype=content.dtype)
    image = (content * 0.8 + 0.1 + 0.01 * noise).requires_grad_(True)
    return net, c_t, regions, image


@pytest.mark.parametrize("loss", ["gram", "wasserstein", "sliced"])
@pytest.mark.parametrize("variant", ["plain", "masks", "luminance"])
def test_tiled_loss_and_gradient_equal_the_untiled_ones(loss: str, variant: str) -> None:
    config = StyleConfig(size=128, style_loss=loss, tv_weight=1e-2, **SHALLOW)  # type: ignore[arg-type]
    h, w = 72, 104  # not multiples of the tile: the last row and column of tiles are smaller
    net, c_t, regions, image = _pair(config, h, w, variant == "masks", variant == "luminance")
    reference = Objective.of(net, c_t, regions, config)(image)
    (g_ref,) = torch.autograd.grad(reference["total"], image)
    step = stride(deepest(config.layers))
    plan = Plan(tile_grid(h, w, 16, exact_halo(config.layers), step), 16, exact_halo(config.layers), 0)
    assert len(plan.tiles) == 5 * 7
    tiled = TiledObjective.of(net, c_t, regions, config, plan=plan)(image)
    (g,) = torch.autograd.grad(tiled["total"], image)
    for name in reference:
        got, want = float(tiled[name].detach()), float(reference[name].detach())
        assert abs(got - want) <= 1e-6 * abs(want) + 1e-12, name
    assert float((g - g_ref).norm() / g_ref.norm()) <= 1e-4


def test_a_smaller_halo_is_inexact_and_the_error_shrinks_with_it() -> None:
    config = StyleConfig(size=128, **SHALLOW)
    net, c_t, regions, image = _pair(config, 72, 104, False, False)
    reference = Objective.of(net, c_t, regions, config)(image)
    (g_ref,) = torch.autograd.grad(reference["total"], image)
    errors = []
    for halo in (0, 4, 8, 16):
        plan = Plan(tile_grid(72, 104, 16, halo, 4), 16, halo, 0)
        (g,) = torch.autograd.grad(TiledObjective.of(net, c_t, regions, config, plan=plan)(image)["total"], image)
        errors.append(float((g - g_ref).norm() / g_ref.norm()))
    assert errors[0] > errors[1] > errors[2] > 1e-3 > 1e-9 > errors[3]


def test_stitched_targets_equal_whole_image_targets() -> None:
    config = StyleConfig(size=128, **SHALLOW)
    net = _net(config, torch.float32)
    image = gradient_image(72, 104, 5)
    with torch.no_grad():
        whole = net(image)
        stitched = TiledEncoder(net, 32, exact_halo(config.layers), 4)(image)
    assert set(stitched) == set(whole)
    for layer in whole:
        torch.testing.assert_close(stitched[layer], whole[layer], rtol=1e-4, atol=1e-5)


def test_tiled_targets_hold_only_what_is_asked_and_sum_style_statistics_exactly() -> None:
    config = StyleConfig(size=128, **SHALLOW)
    net = _net(config, torch.float32)
    image = gradient_image(72, 104, 5)
    tiled = TiledEncoder(net, 32, exact_halo(config.layers), 4)
    with torch.no_grad():
        whole = net(image)
        content = content_target(tiled, image, config.content_layers)
        style = style_target(tiled, image, config.style_layers)
    assert set(content) == set(config.content_layers)  # no other layer's whole map is stitched
    for layer in config.style_layers:
        expected = style_stats(whole[layer])
        torch.testing.assert_close(style[layer].moment, expected.moment, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(style[layer].mean, expected.mean, rtol=1e-5, atol=1e-6)


def test_the_planner_tiles_only_what_does_not_fit() -> None:
    cpu = torch.device("cpu")
    config = StyleConfig(size=4096)
    assert plan_tiles(3072, 4096, config, cpu, budget=64 << 30) is None
    plan = plan_tiles(3072, 4096, config, cpu, budget=20 << 30)
    assert plan is not None and plan.halo == 96 and plan.tile % 16 == 0 and plan.peak_bytes <= 20 << 30
    assert len(plan.tiles) > 1 and plan.history == 30
    short = plan_tiles(3072, 4096, config, cpu, budget=9 << 30)
    assert short is not None and short.history < 30  # the full history would not fit: shortened, and said
    assert plan_tiles(3072, 4096, config.replace(tile="off"), cpu, budget=1 << 30) is None  # refused elsewhere
    forced = plan_tiles(512, 512, config.replace(tile="256"), cpu, budget=64 << 30)
    assert forced is not None and forced.tile == 256 and len(forced.tiles) == 4


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({"tile": "8"}, "--tile 8 must be a multiple of 16"),
        ({"tile": "100"}, "use --tile 96"),
        ({"tile": "256", "tile_halo": 512}, "no larger than --tile 256"),
        ({"tile": "big"}, "--tile must be auto, off or a size"),
    ],
)
def test_bad_tile_settings_are_one_line(settings: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as info:
        StyleConfig(**settings)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


@pytest.fixture(scope="module")
def shallow_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nst_engine.export.onnx_export import export

    path = tmp_path_factory.mktemp("shallow") / "shallow.onnx"
    export(random_weights(0), path, SHALLOW["content_layers"] + SHALLOW["style_layers"], "max")
    return path


def test_a_tiled_run_matches_the_untiled_run_from_the_same_seed(shallow_model: Path) -> None:
    from nst_engine.export.model_file import inspect
    from nst_engine.export.runtime import OnnxEncoder

    model_path = shallow_model
    info = inspect(model_path)
    content, style = gradient_image(96, 128, 1), gradient_image(96, 96, 2)
    results = []
    for tile in ("off", "32"):
        # fp32: tiling is exact in the arithmetic it is done in; bf16 rounds each tile's convolutions differently.
        config = StyleConfig(size=128, steps=3, tile=tile, channels_last=False, precision="fp32", **SHALLOW)
        net = info.torch_module(config.layers)
        targets = DirectTargets(OnnxEncoder(model_path, "cpu"))
        results.append(stylize(content, [style], config=config, net=net, targets=targets))
    difference = (results[0].image - results[1].image).abs()
    assert float(difference.max()) < 2e-3 and float(difference.mean()) < 1e-4


def test_no_seam_at_tile_borders_on_a_flat_photo_with_a_striped_style(shallow_model: Path) -> None:
    from nst_engine.export.model_file import inspect
    from nst_engine.export.runtime import OnnxEncoder

    model_path = shallow_model
    info = inspect(model_path)
    flat = torch.full((1, 3, 96, 96), 0.5)
    stripes = torch.zeros(1, 3, 96, 96)
    stripes[..., ::8, :] = 1.0
    stripes[..., 1::8, :] = 1.0
    config = StyleConfig(size=96, steps=8, tile="32", init="random", **SHALLOW)
    targets = DirectTargets(OnnxEncoder(model_path, "cpu"))
    out = stylize(flat, [stripes], config=config, net=info.torch_module(config.layers), targets=targets).image
    # Vertical change across each tile border, against the same measure inside tiles.
    dx = (out[..., :, 1:] - out[..., :, :-1]).abs().mean(dim=(0, 1, 2))
    borders = dx[[31, 63]].mean()
    inside = dx[[c for c in range(95) if c not in (31, 63)]].mean()
    assert float(borders) < 1.5 * float(inside)
