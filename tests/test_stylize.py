"""The pipeline's plan and hand-offs: the scale plan computed once from the settings, what a resumed run and a
video frame go through, and one content image through ``Pipeline`` (same seed, same bytes)."""

from __future__ import annotations

import pytest
import torch

from nst_engine.checkpoint import Checkpoint
from nst_engine.config import StyleConfig
from nst_engine.errors import ConfigError
from nst_engine.plan import FrameGuide, ScalePlan, check_mask, check_mask_count
from nst_engine.stylize import Pipeline
from nst_engine.targets import DirectTargets
from nst_engine.vgg import VGGFeatures
from nst_engine.weights import random_weights
from tests.conftest import gradient_image

LAYERS = {"content_layers": ("relu2_2",), "style_layers": ("relu1_1", "relu2_1")}


def test_the_scale_plan_is_each_scale_coarse_to_fine_with_its_steps_and_style_size() -> None:
    config = StyleConfig(size=256, steps=40, scales=3, scale_steps=10, style_scale=0.5)
    plan = ScalePlan.of(config)
    assert [(lv.long_side, lv.steps, lv.style_side) for lv in plan.levels] == [(64, 10, 32), (128, 10, 64),
                                                                               (256, 40, 128)]  # fmt: skip
    assert plan.total_steps == 60
    default = ScalePlan.of(config.replace(scale_steps=None))
    assert [lv.steps for lv in default.levels] == [20, 20, 40]  # coarser scales: half the final steps


def _plan(**given: object) -> list[tuple[int, int]]:
    return [(lv.long_side, lv.steps) for lv in ScalePlan.of(StyleConfig(**given)).levels]  # type: ignore[arg-type]


def test_without_scales_the_plan_is_chosen_by_size_and_each_scale_takes_about_as_long() -> None:
    assert _plan(size=512) == [(512, 500)]  # below AUTO_COARSE_FROM: one scale, as before
    assert _plan(size=999) == [(999, 500)]
    assert _plan(size=1024) == [(512, 500), (1024, 125)]  # a doubling costs 4x per step: a quarter of the steps
    assert _plan(size=2048) == [(512, 500), (1024, 128), (2048, 32)]
    assert _plan(size=4096) == [(512, 500), (1024, 128), (2048, 32), (4096, 8)]
    assert _plan(size=1500) == [(375, 500), (750, 128), (1500, 32)]
    # --steps is the final scale's; coarser scales still take its time, up to 500 steps (or --steps if more)
    assert _plan(size=2048, steps=100) == [(512, 500), (1024, 400), (2048, 100)]
    assert _plan(size=2048, steps=1000) == [(512, 1000), (1024, 1000), (2048, 1000)]
    assert _plan(size=2048, scale_steps=50) == [(512, 50), (1024, 50), (2048, 32)]
    # --scales given: the plan as before (coarser scales half the final steps)
    assert _plan(size=2048, scales=1) == [(2048, 500)]
    assert _plan(size=2048, scales=2, steps=40) == [(1024, 20), (2048, 40)]
    assert StyleConfig(size=2048).final_steps == 32 and StyleConfig(size=2048, scales=1).final_steps == 500


def test_a_resumed_run_goes_on_from_its_scale_and_a_video_frame_runs_the_last_scale_only() -> None:
    plan = ScalePlan.of(StyleConfig(size=256, scales=3))
    stop = Checkpoint(1, 5, torch.zeros(1, 3, 8, 8))
    assert [lv.index for lv in plan.todo(stop, None)] == [1, 2]
    assert [lv.index for lv in plan.todo(None, FrameGuide(None, [], 1.0, 3))] == [2]
    with pytest.raises(ConfigError, match="already past the last scale"):
        plan.todo(Checkpoint(3, 0, torch.zeros(1, 3, 8, 8)), None)


def test_masks_are_checked_against_the_styles_and_the_photo() -> None:
    with pytest.raises(ConfigError, match="2 masks for 1 styles"):
        check_mask_count([1, 2], ["a"])
    photo = torch.zeros(1, 3, 30, 40)
    with pytest.raises(ConfigError, match="different aspect ratios"):
        check_mask(torch.ones(1, 1, 40, 40), photo, "mask 1")
    with pytest.raises(ConfigError, match="covers no pixel"):
        check_mask(torch.zeros(1, 1, 30, 40), photo, "mask 1")
    assert float(check_mask(torch.full((1, 1, 15, 20), 2.0), photo, "mask 1").max()) == 1.0


def _pipeline(config: StyleConfig) -> Pipeline:
    net = VGGFeatures(config.layers)
    net.load_features(random_weights(0).state)
    return Pipeline(config, net, DirectTargets(net), [gradient_image(32, 32, 2)])


def test_one_pipeline_stylizes_images_alike_and_reports_every_scale_and_step() -> None:
    config = StyleConfig(size=64, steps=3, scales=2, scale_steps=2, init="random", **LAYERS)
    seen: list[tuple[int, int]] = []
    pipeline = _pipeline(config)
    first = pipeline.run(gradient_image(64, 48, 1), on_scale=lambda info: seen.append((info.index, info.steps)))
    again = _pipeline(config).run(gradient_image(64, 48, 1))
    assert seen == [(0, 2), (1, 3)] and len(first.steps) == 5
    assert torch.equal(first.image, again.image)  # the same seed: the same bytes
    other = _pipeline(config.replace(seed=1)).run(gradient_image(64, 48, 1))
    assert not torch.equal(first.image, other.image)
