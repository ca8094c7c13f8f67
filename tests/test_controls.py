"""Quality controls: multi-scale, colour preservation, masks, pooling, loss variants, presets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nst_engine import color
from nst_engine.config import StyleConfig
from nst_engine.errors import ConfigError
from nst_engine.export.runtime import OnnxEncoder
from nst_engine.objective import normalize_grad
from nst_engine.presets import PRESETS, build_config, markdown_table
from nst_engine.stylize import stylize
from nst_engine.targets import DirectTargets
from nst_engine.vgg import ScaledAvgPool2d, VGGFeatures
from tests.conftest import ROOT, gradient_image


@pytest.fixture(scope="module")
def targets(model_path: Path) -> DirectTargets:
    return DirectTargets(OnnxEncoder(model_path, "cpu"))


def _run(model_info, targets, content, styles, **settings):  # type: ignore[no-untyped-def]
    kwargs = {k: settings.pop(k) for k in ("style_masks", "content_mask") if k in settings}
    config = StyleConfig(**{"size": 64, "steps": 12, **settings})
    return stylize(
        content, styles, config=config, net=model_info.torch_module(config.layers), targets=targets, **kwargs
    )


def test_scale_sizes_and_min_size() -> None:
    assert StyleConfig(size=512, scales=3).scale_sizes() == [128, 256, 512]
    assert StyleConfig(size=512, scales=3, scale_factor=2**0.5).scale_sizes() == [256, 362, 512]
    assert StyleConfig(size=64, scales=5).scale_sizes() == [32, 64]  # never below 32 px or the network minimum
    assert StyleConfig(size=512).with_min_size(100).scale_sizes() == [128, 256, 512]
    with pytest.raises(ConfigError, match="--min-size"):
        StyleConfig(size=512).with_min_size(1000)


def test_multiscale_runs_coarse_to_fine(model_info, targets, shared_images: Path) -> None:  # type: ignore[no-untyped-def]
    from nst_engine import images

    content = images.load(shared_images / "content_turtle.jpg", 96)
    style = images.load(shared_images / "style_great_wave.jpg", 96)
    result = _run(model_info, targets, content, [style], size=96, scales=2, steps=6, scale_steps=4)
    sizes = [(s.scale, s.size) for s in result.steps]
    assert sizes[:4] == [(0, (36, 48))] * 4 and sizes[4:] == [(1, (72, 96))] * 6
    assert result.image.shape == (1, 3, 72, 96)
    # The fine scale starts from the upsampled coarse result, so it starts below a cold start's loss.
    cold = _run(model_info, targets, content, [style], size=96, steps=1)
    assert result.steps[4].losses["total"] < cold.steps[0].losses["total"]


def test_handoff_keeps_the_photo_detail_and_the_coarse_layout_not_its_texture() -> None:
    from nst_engine.resize import resize as resize_tensor
    from nst_engine.stylize import handoff

    photo = gradient_image(64, 96, seed=3)
    photo = (photo + 0.2 * torch.rand(photo.shape, generator=torch.Generator().manual_seed(4))).clamp(0, 1)
    coarse = resize_tensor(photo, 32, 48)
    # A coarse result that changed nothing hands off the photo itself, detail and all (plain upsampling blurs it).
    assert torch.allclose(handoff(coarse, photo), photo, atol=1e-5)
    plain = resize_tensor(coarse, 64, 96)
    assert (plain - photo).abs().mean() > 0.03
    # What the coarse scale changed arrives at the fine scale: its downsized hand-off is the coarse result.
    changed = (coarse + 0.15 * torch.linspace(-1, 1, 48).view(1, 1, 1, 48)).clamp(0, 1)
    fine = handoff(changed, photo)
    assert fine.shape == photo.shape
    assert (resize_tensor(fine, 32, 48) - changed).abs().mean() < 0.01
    assert (resize_tensor(fine, 32, 48) - coarse).abs().mean() > 0.05
    # The coarse scale's texture is not handed on (the fine scale makes its own): a pixel-sized checkerboard
    # change arrives whole without the smoothing and all but vanishes with it.
    checker = ((torch.arange(32).view(-1, 1) + torch.arange(48).view(1, -1)) % 2).float().view(1, 1, 32, 48)
    textured = (coarse + 0.2 * checker - 0.1).clamp(0, 1)
    assert (handoff(textured, photo, smoothing=1) - photo).abs().mean() > 0.03
    assert (handoff(textured, photo) - photo).abs().mean() < 0.005


def test_luminance_preservation_keeps_the_content_chroma(model_info, targets) -> None:  # type: ignore[no-untyped-def]
    content = gradient_image(48, 64, seed=1)
    style = torch.zeros(1, 3, 64, 64)
    style[:, 0] = gradient_image(64, 64, seed=2)[:, 0]  # a red painting
    plain = _run(model_info, targets, content, [style], init="random", style_weight=1e7)
    kept = _run(model_info, targets, content, [style], init="random", style_weight=1e7, preserve_colors="luminance")
    d_plain, d_kept = color.chroma_distance(plain.image, content), color.chroma_distance(kept.image, content)
    assert d_kept < 0.03 and d_kept < d_plain / 5, (d_kept, d_plain)  # clamping to [0, 1] costs a little


def test_histogram_matching_moves_style_colours_to_the_content() -> None:
    content, style = gradient_image(40, 40, seed=3), gradient_image(40, 40, seed=4) * 0.3 + 0.6
    matched = color.match_histogram(style, content)
    pixels_c, pixels_m = content[0].flatten(1), matched[0].flatten(1)
    torch.testing.assert_close(pixels_m.mean(1), pixels_c.mean(1), atol=5e-3, rtol=0)  # after clamping
    torch.testing.assert_close(torch.cov(pixels_m), torch.cov(pixels_c), atol=5e-3, rtol=0)
    assert float((style[0].flatten(1).mean(1) - pixels_c.mean(1)).abs().max()) > 0.1  # it did move


def test_two_masked_styles_land_in_their_regions(model_info, targets) -> None:  # type: ignore[no-untyped-def]
    content = torch.full((1, 3, 48, 64), 0.5) + 0.05 * gradient_image(48, 64, seed=5)
    red, blue = torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 64)
    red[:, 0], blue[:, 2] = 0.6 + 0.4 * gradient_image(64, 64, 6)[:, 0], 0.6 + 0.4 * gradient_image(64, 64, 7)[:, 0]
    left = torch.zeros(1, 1, 48, 64)
    left[..., :32] = 1.0
    result = _run(model_info, targets, content, [red, blue], style_masks=[left, 1 - left], style_weight=1e6)
    image = result.image[0]
    redness = image[0] - image[2]  # red minus blue, per pixel
    left_red, right_red = float(redness[:, :24].mean()), float(redness[:, 40:].mean())
    assert left_red > 0.03 and right_red < -0.03 and left_red - right_red > 0.1, (left_red, right_red)


def test_content_mask_keeps_the_photo(model_info, targets) -> None:  # type: ignore[no-untyped-def]
    content, style = gradient_image(48, 64, seed=8), gradient_image(64, 64, seed=9)
    keep = torch.zeros(1, 1, 48, 64)
    keep[..., 24:, :] = 1.0  # keep the bottom half
    result = _run(model_info, targets, content, [style], content_mask=keep, init="random")
    torch.testing.assert_close(result.image[..., 24:, :], content[..., 24:, :], atol=1e-6, rtol=0)
    assert float((result.image[..., :24, :] - content[..., :24, :]).abs().mean()) > 0.01


def test_bad_masks_are_clear_errors(model_info, targets) -> None:  # type: ignore[no-untyped-def]
    content, style = gradient_image(48, 64), gradient_image(64, 64)
    with pytest.raises(ConfigError, match="different aspect ratios"):
        _run(model_info, targets, content, [style], style_masks=[torch.ones(1, 1, 64, 64)])
    with pytest.raises(ConfigError, match="covers no pixel"):
        _run(model_info, targets, content, [style], style_masks=[torch.zeros(1, 1, 48, 64)])
    with pytest.raises(ConfigError, match="2 masks for 1 styles"):
        _run(model_info, targets, content, [style], style_masks=[torch.ones(1, 1, 48, 64)] * 2)


def test_avg_pooling_is_calibrated_to_match_max_pooling_magnitudes(weights) -> None:  # type: ignore[no-untyped-def]
    nets = {p: VGGFeatures(["relu5_1"], p) for p in ("max", "avg")}  # type: ignore[arg-type]
    for net in nets.values():
        net.load_features(weights.state)
    assert isinstance(nets["avg"].features[4], ScaledAvgPool2d) and nets["avg"].pool_scales == (2.0,) * 4
    scales = nets["avg"].calibrate_avg_pooling()
    assert len(scales) == 4 and all(s > 1.0 for s in scales)
    x = torch.rand(1, 8, 4, 4)
    torch.testing.assert_close(ScaledAvgPool2d(3.0)(x), 3 * torch.nn.functional.avg_pool2d(x, 2))
    image = gradient_image(96, 96, seed=10)  # not one of the calibration images
    with torch.no_grad():
        means = {p: float(net(image)["relu5_1"].mean()) for p, net in nets.items()}
    assert 0.67 < means["avg"] / means["max"] < 1.5, means


def test_avg_pooling_model_round_trips_its_factors(weights, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from nst_engine.export.model_file import inspect
    from nst_engine.export.onnx_export import export

    path = tmp_path / "avg.onnx"
    export(weights, path, ("relu1_1", "relu3_1"), "avg")
    info = inspect(path)
    assert info.pooling == "avg" and len(info.pool_scales) == 2 and info.pool_scales != (2.0, 2.0)
    image = gradient_image(48, 64, seed=11)
    with torch.no_grad():
        expected = info.torch_module()(image)["relu3_1"]
    got = OnnxEncoder(path, "cpu")(image)["relu3_1"]
    assert float((got - expected).abs().max() / expected.abs().max()) < 1e-4


@pytest.mark.parametrize(
    "settings",
    [
        {"style_loss": "wasserstein"},
        {"normalize_gradients": True},
        {"pooling": "max", "style_layer_weights": (4.0, 1.0, 1.0, 1.0, 1.0)},
        {"content_layers": ("relu3_1",), "style_layers": ("relu1_1", "relu2_1")},
    ],
)
def test_loss_variants_lower_the_style_loss(model_info, targets, settings) -> None:  # type: ignore[no-untyped-def]
    result = _run(model_info, targets, gradient_image(48, 64, 11), [gradient_image(64, 64, 12)], **settings)
    assert result.steps[-1].losses["style"] < 0.7 * result.steps[0].losses["style"]


def test_normalized_gradient_has_unit_l1_norm() -> None:
    x = torch.randn(1, 4, 5, 5, requires_grad=True)
    (normalize_grad(x) * torch.randn(1, 4, 5, 5)).sum().backward()
    assert x.grad is not None and abs(float(x.grad.abs().sum()) - 1.0) < 1e-5


def test_presets_and_explicit_options_win() -> None:
    gatys = build_config("gatys", {})
    assert gatys.pooling == "max" and gatys.normalization == "mean" and gatys.init == "content"
    assert gatys.style_weight == 5e3 and gatys.tv_weight == 0.0
    paper = build_config("gatys", {"pooling": "avg", "init": "random", "normalization": "gatys"})
    assert (paper.pooling, paper.init, paper.style_weight) == ("avg", "random", 5e3)
    tutorial = build_config("tutorial", {"steps": 7, "size": 64})
    assert tutorial.content_layers == ("conv2_2",) and tutorial.steps == 7 and tutorial.size == 64
    assert build_config(None, {}) == StyleConfig()
    with pytest.raises(ConfigError, match="unknown preset"):
        build_config("picasso", {})
    assert set(PRESETS) == set(SOURCE_VALUES)


#: Each reference's settings, read from the source itself (not from engine.presets): what the preset must give.
SOURCE_VALUES = {
    # leongatys/PytorchNeuralStyleTransfer: r42 content at 1 (MSE), r11..r51 style at 1e3/n^2 on MSE(G/(hw)) (= 1e3
    # on each of ours, Gram / (C*H*W): averaged, 5e3), VGG() with its default max pooling, opt_img = the content
    # image, max_iter 500, img_size 512, torch's LBFGS (history_size 100), no smoothness term.
    "gatys": {"content_layers": ("relu4_2",), "content_weight": 1.0, "style_weight": 5e3, "tv_weight": 0.0}
    | {"pooling": "max", "init": "content", "normalization": "mean", "optimizer": "lbfgs", "lbfgs_history": 100}
    | {"steps": 500, "size": 512},
    # neural_style.lua defaults: -content_weight 5 -style_weight 100 on each of the five style layers (ours are
    # averaged: 500) -tv_weight 1e-3 on sum(|dx|) + sum(|dy|) of the 0-255 image -num_iterations 1000 -image_size 512
    # -init random (randn * 0.001 around the mean pixel) -pooling max, -lbfgs_num_correction default 100.
    "jcjohnson": {"content_weight": 5.0, "style_weight": 500.0, "tv_weight": 1e-3, "steps": 1000, "size": 512}
    | {"init": "mean", "tv_norm": "l1-sum", "pooling": "max", "optimizer": "lbfgs", "lbfgs_history": 100},
    # The PyTorch tutorial: content after conv_4 (= conv2_2), style after conv_1..conv_5, num_steps 300, input =
    # a clone of the content image, no TV term.
    "tutorial": {"content_layers": ("conv2_2",), "steps": 300, "init": "content", "tv_weight": 0.0}
    | {"style_layers": ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1")},
}


@pytest.mark.parametrize("name", sorted(SOURCE_VALUES))
def test_each_preset_gives_its_sources_settings(name: str) -> None:
    config = build_config(name, {})
    assert {k: getattr(config, k) for k in SOURCE_VALUES[name]} == SOURCE_VALUES[name]
    assert config.feature_units == "raw"  # the sources' weights are for their networks' own features
    assert build_config(name, {"pooling": "max", "steps": 3}).steps == 3  # an option given still wins


def test_readme_preset_table_matches_the_code() -> None:
    assert markdown_table() in (ROOT / "docs" / "controls.md").read_text()
