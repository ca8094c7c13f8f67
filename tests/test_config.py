"""Settings declared once: every field's default fits its own declaration, values are checked from the
declarations, records read back strictly, and the video settings follow the same pattern."""

from __future__ import annotations

import dataclasses

import pytest

from nst_engine.config import StyleConfig, check_value, config_from_record, settings
from nst_engine.errors import ConfigError
from nst_engine.video_settings import VideoSettings


@pytest.mark.parametrize("cls", [StyleConfig, VideoSettings])
def test_every_field_is_declared_with_help_and_a_default_that_passes_its_own_checks(cls: type) -> None:
    declared = settings(cls)
    assert set(declared) == {f.name for f in dataclasses.fields(cls)}
    default = cls()
    for name, (_, spec, _) in declared.items():
        assert spec.help.strip() and spec.group, name
        check_value(name, getattr(default, name), cls)


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        ({"size": 8}, "--size must be 16 or more"),
        ({"style_weight": -1.0}, "--style-weight must be 0 or more"),
        ({"scale_factor": 1.0}, "--scale-factor must be above 1"),
        ({"optimizer": "lbgfs"}, "did you mean 'lbfgs'"),
        ({"style_layer_weights": (1.0,)}, "has 1 values for 5 style layers"),
        ({"tile": "100"}, "--tile 100 must be a multiple of 16"),
        ({"seed": True}, "--seed must be a whole number"),
    ],
)
def test_a_bad_setting_is_one_message_naming_the_option(changes: dict[str, object], said: str) -> None:
    with pytest.raises(ConfigError, match=said.replace("(", r"\(")):
        StyleConfig(**changes)  # type: ignore[arg-type]


def test_a_record_reads_back_to_the_same_settings_and_refuses_what_it_does_not_know() -> None:
    config = StyleConfig(size=64, style_layers=("relu1_1", "relu3_1"), style_blend_weights=(1.0, 3.0))
    assert config_from_record(config.to_dict(), "x").to_dict() == config.to_dict()
    with pytest.raises(ConfigError, match="does not know \\('colour'\\)"):
        config_from_record({"colour": 1}, "checkpoint 'c'")
    with pytest.raises(ConfigError, match="records a bad setting: --steps must be a whole number"):
        config_from_record({"steps": "many"}, "checkpoint 'c'")


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        ({"temporal_weight": -1.0}, "--temporal-weight must be 0 or more"),
        ({"temporal_frames": (0,)}, "--temporal-frames must be 1 or more"),
        ({"temporal_frames": ()}, "--temporal-frames must be frame distances"),
        ({"temporal_frames": (1, 1)}, "lists a distance twice"),
        ({"frame_steps": 0}, "--frame-steps must be 1 or more"),
        ({"fps": 0.0}, "--fps must be above 0"),
        ({"fps": 5000.0}, "--fps must be 1000 or less"),
        ({"chunk_frames": 0}, "--chunk-frames must be 1 or more"),
        ({"frame_steps": 2.5}, "--frame-steps must be a whole number"),
    ],
)
def test_video_settings_are_checked_from_their_declarations_when_made(changes: dict[str, object], said: str) -> None:
    with pytest.raises(ConfigError, match=said):
        VideoSettings(**changes)  # type: ignore[arg-type]
    assert VideoSettings().replace(frame_steps=7).to_dict()["frame_steps"] == 7
