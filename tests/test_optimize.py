"""The optimisation: gradients against finite differences, falling losses, determinism, faults, resume."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from nst_engine import images
from nst_engine.config import StyleConfig
from nst_engine.errors import NumericalError
from nst_engine.export.runtime import OnnxEncoder
from nst_engine.objective import Objective
from nst_engine.optim.loop import optimize
from nst_engine.stylize import stylize
from nst_engine.targets import DirectTargets, StyleRegion, content_target, style_target
from tests.conftest import gradient_image, poisoned_quadratic


def test_autograd_gradient_matches_finite_differences(model_info) -> None:  # type: ignore[no-untyped-def]
    """Total loss (content + style + tv) in float64 on a 16x16 image, along three random directions."""
    config = StyleConfig(size=16, tv_weight=0.1, tv_norm="l2", style_weight=1e3)  # smooth: no |x| kink at 0
    net = model_info.torch_module(config.layers).double()
    content, style = gradient_image(16, 16, seed=1).double(), gradient_image(16, 16, seed=2).double()
    with torch.no_grad():
        targets = content_target(net, content, config.content_layers)
        style_t = style_target(net, style, config.style_layers)
    objective = Objective.of(net, targets, [StyleRegion(style_t)], config)
    x = gradient_image(16, 16, seed=3).double().requires_grad_(True)
    (grad,) = torch.autograd.grad(objective(x)["total"], x)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        v = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        h = 1e-7  # small enough that the step rarely crosses a ReLU or max-pool kink
        with torch.no_grad():
            numeric = (objective(x + h * v)["total"] - objective(x - h * v)["total"]) / (2 * h)
        analytic = (grad * v).sum()
        assert torch.isclose(analytic, numeric, rtol=1e-4, atol=1e-9), (float(analytic), float(numeric))


@pytest.fixture(scope="module")
def pair(shared_images: Path) -> tuple[torch.Tensor, torch.Tensor]:
    content = images.load(shared_images / "content_turtle.jpg", 80)
    style = images.load(shared_images / "style_great_wave.jpg", 80)
    return content, style


def _run(model_info, model_path, pair, **settings):  # type: ignore[no-untyped-def]
    config = StyleConfig(**{"size": 80, "steps": 15, **settings})
    return stylize(
        pair[0],
        [pair[1]],
        config=config,
        net=model_info.torch_module(config.layers),
        targets=DirectTargets(OnnxEncoder(model_path, "cpu")),
    )


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_loss_falls_on_real_images(model_info, model_path, pair, optimizer: str) -> None:  # type: ignore[no-untyped-def]
    result = _run(model_info, model_path, pair, optimizer=optimizer)
    first, last = result.steps[0].losses, result.steps[-1].losses
    assert len(result.steps) == 15 and result.image.shape == (1, 3, 60, 80)
    assert last["style"] < first["style"] / 5 and last["total"] < first["total"] / 3
    assert float(result.image.min()) >= 0.0 and float(result.image.max()) <= 1.0


def test_same_seed_same_bytes_other_seed_differs(model_info, model_path, pair, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    outputs = []
    for seed in (7, 7, 8):
        result = _run(model_info, model_path, pair, init="random", seed=seed, steps=5)
        path = tmp_path / f"{len(outputs)}.png"
        images.save(result.image, path)
        outputs.append(path.read_bytes())
    assert outputs[0] == outputs[1] and outputs[0] != outputs[2]


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_pixels_stay_in_the_box_so_the_reported_loss_is_the_saved_images(optimizer: str) -> None:
    # The loss pulls half the pixels towards values no image can hold: the best image clamps them.
    target = torch.linspace(-0.5, 1.5, 48).reshape(1, 3, 4, 4)
    seen: list[tuple[float, torch.Tensor]] = []  # (reported loss, the image after that step)
    result = optimize(
        poisoned_quadratic(target, set()),
        torch.full((1, 3, 4, 4), 0.5),
        steps=150,
        optimizer=optimizer,
        lr=0.05,
        callback=lambda s, img: seen.append((s.losses["total"], img())),
    )
    assert result.pixels is not None and float(result.pixels.min()) >= 0.0 and float(result.pixels.max()) <= 1.0
    torch.testing.assert_close(result.image, target.clamp(0, 1), rtol=0, atol=1e-3)
    # A step reports the loss of the image it started from: the image the step before it left.
    for (_, image), (loss, _) in itertools.pairwise(seen):
        assert loss == pytest.approx(float((image - target).pow(2).sum()), rel=1e-5)


def test_non_finite_loss_rolls_back_and_recovers() -> None:
    target = torch.full((1, 3, 4, 4), 0.25)
    events = []
    result = optimize(
        poisoned_quadratic(target, {4}),
        torch.rand(1, 3, 4, 4),
        steps=12,
        optimizer="adam",
        lr=0.1,
        callback=lambda s, img: events.append(s),
    )
    assert result.recoveries == 1 and any("recovered" in e.event for e in events)
    assert torch.isfinite(result.image).all()


def test_persistent_non_finite_loss_stops_with_last_good_image() -> None:
    target = torch.full((1, 3, 4, 4), 0.25)
    with pytest.raises(NumericalError, match="non-finite") as info:
        optimize(poisoned_quadratic(target, set(range(4, 100))), torch.rand(1, 3, 4, 4), steps=20, optimizer="adam")
    assert isinstance(info.value.image, torch.Tensor) and torch.isfinite(info.value.image).all()


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_resume_reaches_the_same_image_as_an_uninterrupted_run(model_info, model_path, pair, optimizer: str) -> None:  # type: ignore[no-untyped-def]
    full = _run(model_info, model_path, pair, optimizer=optimizer, steps=10)
    calls = {"n": 0}

    def stop_after_four() -> bool:
        calls["n"] += 1
        return calls["n"] > 4

    config = StyleConfig(size=80, steps=10, optimizer=optimizer)  # type: ignore[arg-type]
    encoder = OnnxEncoder(model_path, "cpu")
    first = stylize(
        pair[0],
        [pair[1]],
        config=config,
        net=model_info.torch_module(config.layers),
        targets=DirectTargets(encoder),
        should_stop=stop_after_four,
    )
    assert first.interrupted and first.checkpoint is not None and first.checkpoint.step == 4
    second = stylize(
        pair[0],
        [pair[1]],
        config=config,
        net=model_info.torch_module(config.layers),
        targets=DirectTargets(encoder),
        resume=first.checkpoint,
    )
    assert not second.interrupted and len(second.steps) == 6
    torch.testing.assert_close(second.image, full.image, rtol=0, atol=0)
