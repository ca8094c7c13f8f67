"""Issue 21 classes fixed so far, one case each: non-finite settings, non-finite weights, a NaN validation
difference, --save-every below 0, the umask of exported models and cache entries."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nst_engine.cli import app
from nst_engine.config import StyleConfig
from nst_engine.errors import ConfigError, WeightsError
from nst_engine.weights import random_weights, resolve

FLOAT_SETTINGS = ["lr", "style_weight", "content_weight", "tv_weight", "style_scale", "scale_factor"]


@pytest.mark.parametrize("name", FLOAT_SETTINGS)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_float_settings_are_refused(name: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"--{name.replace('_', '-')} must be a finite number"):
        StyleConfig(**{name: value})


@pytest.mark.parametrize("name", ["style_layer_weights", "style_blend_weights"])
def test_non_finite_weight_lists_are_refused(name: str) -> None:
    values = (1.0, float("nan"), 1.0, 1.0, 1.0)
    with pytest.raises(ConfigError, match="finite number"):
        StyleConfig(**{name: values})


def test_non_finite_weights_in_a_file_are_refused(tmp_path: Path) -> None:
    state = dict(random_weights(0).state)
    state["features.5.weight"] = state["features.5.weight"].clone()
    state["features.5.weight"][0, 0, 0, 0] = float("nan")
    path = tmp_path / "nan.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"'features\.5\.weight' holds NaN"):
        resolve(str(path))


def test_a_nan_difference_fails_validation(model_path: Path) -> None:
    """A torch side that computes NaN must not pass as 'max abs diff nan' (NaN > tolerance is False)."""
    from nst_engine.errors import ExportValidationError
    from nst_engine.export.validate import validate
    from nst_engine.vgg import VGGFeatures
    from tests.conftest import LAYERS

    state = dict(random_weights(0).state)
    state["features.0.bias"] = torch.full_like(state["features.0.bias"], float("nan"))
    net = VGGFeatures(LAYERS)
    net.load_features(state)
    with pytest.raises(ExportValidationError, match="disagrees with torch"):
        validate(model_path, net)


def test_save_every_below_zero_is_one_line(shared_images: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.png"
    result = CliRunner().invoke(
        app,
        [
            "stylize",
            str(shared_images / "content_turtle.jpg"),
            str(shared_images / "style_great_wave.jpg"),
            *("-o", str(out), "--weights", "random", "--save-every", "-1"),
        ],
    )
    assert result.exit_code != 0 and "--save-every must be 0" in result.output and not out.exists()


def test_exported_models_and_cache_entries_honour_the_umask(tmp_path: Path) -> None:
    from nst_engine.cache import TargetCache
    from nst_engine.export.onnx_export import export

    old = os.umask(0o022)
    try:
        export(random_weights(0), tmp_path / "m.onnx", ("relu1_1",))
        TargetCache(tmp_path / "cache").save("ab" * 32, {"x": torch.zeros(2)}, "content")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.onnx").stat().st_mode) == 0o644
    entries = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert entries and all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in entries)


@pytest.mark.parametrize("name", ["../../escaped_{stem}.png", "/tmp/nst-engine-abs-{stem}.png"])
def test_name_patterns_stay_inside_the_output_folder(shared_images: Path, tmp_path: Path, name: str) -> None:
    folder = tmp_path / "a" / "b"
    folder.mkdir(parents=True)
    result = CliRunner().invoke(
        app,
        [
            "stylize",
            str(shared_images / "content_turtle.jpg"),
            *("--style", str(shared_images / "style_great_wave.jpg"), "-o", str(folder), "--name", name),
            *("--weights", "random", "--steps", "1", "--size", "32"),
        ],
    )
    assert result.exit_code != 0 and "outside the -o folder" in result.output
    assert not list(tmp_path.rglob("escaped_*")) and not Path("/tmp/nst-engine-abs-content_turtle.png").exists()


def test_trace_never_replaces_an_input_or_an_existing_file(shared_images: Path, tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes((shared_images / "content_turtle.jpg").read_bytes())
    before = photo.read_bytes()
    args = ("stylize", str(photo), str(shared_images / "style_great_wave.jpg"), "-o", str(tmp_path / "o.png"))
    as_input = CliRunner().invoke(app, [*args, "--trace", str(photo), "--overwrite", "--weights", "random"])
    assert as_input.exit_code != 0 and "is an input of this run" in as_input.output
    notes = tmp_path / "notes.json"
    notes.write_text("mine")
    existing = CliRunner().invoke(app, [*args, "--trace", str(notes), "--weights", "random"])
    assert existing.exit_code != 0 and "pass --overwrite" in existing.output
    assert photo.read_bytes() == before and notes.read_text() == "mine" and not (tmp_path / "o.png").exists()


def test_step_files_never_replace_an_input(shared_images: Path, tmp_path: Path) -> None:
    content = tmp_path / "out.step1.png"
    content.write_bytes((shared_images / "content_turtle.jpg").read_bytes())
    before = content.read_bytes()
    result = CliRunner().invoke(
        app,
        [
            "stylize",
            str(content),
            str(shared_images / "style_great_wave.jpg"),
            *("-o", str(tmp_path / "out.png"), "--save-every", "1", "--weights", "random"),
        ],
    )
    assert result.exit_code != 0 and "--save-every would write" in result.output
    assert content.read_bytes() == before
