"""The command line as a user meets it: CliRunner for most cases, a real subprocess for the rest."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nst_engine import images
from nst_engine.cli import app
from tests.images_corpus import corpus

runner = CliRunner()


def invoke(*args: str | Path):  # type: ignore[no-untyped-def]
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def inputs(shared_images: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    files = corpus(tmp_path_factory.mktemp("bad"))
    files["content"] = shared_images / "content_turtle.jpg"
    files["style"] = shared_images / "style_great_wave.jpg"
    return files


def test_export_command_writes_a_validated_model(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    result = invoke(
        "export",
        "--weights",
        "random:2",
        "-o",
        out,
        "--content-layers",
        "relu1_1",
        "--style-layers",
        "relu1_1,relu2_1",
        "--pooling",
        "avg",
    )
    assert result.exit_code == 0, result.output
    assert out.is_file()
    assert "max abs diff" in result.stderr and "not pretrained" in result.stderr


def test_stylize_writes_image_and_trace(
    inputs: dict[str, Path], model_path: Path, tmp_path: Path, cache_dir: Path
) -> None:
    out, trace = tmp_path / "out.png", tmp_path / "t.json"
    result = invoke(
        "stylize",
        inputs["content"],
        inputs["style"],
        "-o",
        out,
        "--model",
        model_path,
        "--size",
        64,
        "--steps",
        12,
        "--trace",
        trace,
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    assert images.load(out).shape == (1, 3, 48, 64)  # 64 px on the long side, the photo's 4:3 kept
    data = json.loads(trace.read_text())
    assert data["weights"]["pretrained"] is False and "not pretrained" in data["weights"]["label"]
    assert data["settings"]["size"] == 64 and data["settings"]["steps"] == 12
    steps = data["steps"]
    assert len(steps) == 12 and {"step", "elapsed_s", "losses"} <= set(steps[0])
    assert {"content", "style", "tv", "total"} <= set(steps[0]["losses"])
    assert steps[-1]["losses"]["style"] < steps[0]["losses"]["style"] / 5
    assert data["targets"]["style_forward_passes"] == 1 and data["model"]["provider"] == "cpu"
    assert "not pretrained" in result.stderr


def test_save_every_and_jpeg_output(inputs: dict[str, Path], model_path: Path, tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "out.jpg"
    result = invoke(
        "stylize",
        inputs["content"],
        inputs["style"],
        "-o",
        out,
        "--model",
        model_path,
        "--size",
        48,
        "--steps",
        4,
        "--save-every",
        2,
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:2] == b"\xff\xd8"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jpg", "out.step2.jpg", "out.step4.jpg"]


M = ["--model", "{model}"]
BAD_CASES = {
    "missing content": (["{missing}", "{style}", *M], "not found"),
    "corrupt content": (["{truncated.png}", "{style}", *M], "is truncated"),
    "not an image": (["{text.png}", "{style}", *M], "not a readable image"),
    "empty file": (["{empty.png}", "{style}", *M], "empty"),
    "decompression bomb": (["{bomb.png}", "{style}", *M], "over the limit of"),
    "too large for the limit": (["{content}", "{style}", *M, "--max-input-pixels", "1000"], "limit of 1000 pixels"),
    "too thin for the network": (["{long_thin.png}", "{style}", *M], "below the network's minimum of 16 px"),
    "unknown layer": (["{content}", "{style}", *M, "--style-layers", "relu1_1,rellu2_1"], "did you mean 'relu2_1'"),
    "size below minimum": (["{content}", "{style}", *M, "--size", "8"], "--size must be 16 or more, not 8"),
    "wrong-shape weights": (["{content}", "{style}", "--weights", "{wrong.pth}"], "VGG19 needs"),
    "unavailable provider": (["{content}", "{style}", *M, "--provider", "cuda"], "provider 'cuda' is not available"),
    "bad output extension": (["{content}", "{style}", *M, "-o", "{tmp}/out.gif"], ".png, .jpg, .jpeg, .tif or .tiff"),
    "unknown optimizer": (["{content}", "{style}", *M, "--optimizer", "sgd"], "--optimizer must be one of"),
    "model and weights": (["{content}", "{style}", *M, "--weights", "random"], "either --model"),
    "damaged model": (["{content}", "{style}", "--model", "{text.png}"], "not an nst-engine feature model"),
}
if not torch.cuda.is_available():
    BAD_CASES["unavailable device"] = (["{content}", "{style}", *M, "--device", "cuda"], "sees no GPU")


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_is_one_line_and_writes_nothing(
    case: str, inputs: dict[str, Path], model_path: Path, tmp_path: Path, cache_dir: Path
) -> None:
    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 5, 5)}, wrong)
    names = {k: str(v) for k, v in inputs.items()} | {
        "missing": str(tmp_path / "nope.jpg"),
        "tmp": str(tmp_path),
        "wrong.pth": str(wrong),
        "model": str(model_path),
    }
    template, expected = BAD_CASES[case]
    args = [re.sub(r"\{([^}]+)\}", lambda m: names[m.group(1)], a) for a in template]
    defaults = {"-o": str(tmp_path / "out.png"), "--size": "64", "--steps": "2"}
    for option, value in defaults.items():
        if option not in args:
            args += [option, value]
    result = invoke("stylize", *args, "--quiet")
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error:") and expected in " ".join(lines), result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert not [p for p in tmp_path.iterdir() if p.suffix in (".png", ".jpg", ".gif", ".json")]


@pytest.mark.parametrize("name", ["gray.png", "rgba.png", "palette.png", "deep16.png", "exif_rotated.jpg"])
def test_odd_but_valid_images_are_converted(
    name: str, inputs: dict[str, Path], model_path: Path, tmp_path: Path, cache_dir: Path
) -> None:
    out = tmp_path / "out.png"
    result = invoke(
        "stylize",
        inputs[name],
        inputs["style"],
        "-o",
        out,
        "--model",
        model_path,
        "--size",
        32,
        "--steps",
        2,
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    assert max(images.load(out).shape[-2:]) == 32


def _cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "nst_engine", *[str(a) for a in args]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_real_subprocess_run_and_error(
    inputs: dict[str, Path], model_path: Path, tmp_path: Path, cache_dir: Path
) -> None:
    out = tmp_path / "out.png"
    ok = _cli(
        "stylize", inputs["content"], inputs["style"], "-o", out, "--model", model_path, "--size", 40, "--steps", 3
    )
    _, err = ok.communicate(timeout=120)
    assert ok.returncode == 0, err
    assert out.is_file() and "wrote" in err
    bad = _cli("stylize", tmp_path / "missing.jpg", inputs["style"], "-o", tmp_path / "x.png", "--model", model_path)
    _, err = bad.communicate(timeout=120)
    assert bad.returncode == 1 and err.strip().startswith("error:") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signal_saves_image_and_checkpoint_then_resume(
    sig: signal.Signals, inputs: dict[str, Path], model_path: Path, tmp_path: Path, cache_dir: Path
) -> None:
    out, trace = tmp_path / "out.png", tmp_path / "t.json"
    common = [inputs["content"], inputs["style"], "-o", out, "--model", model_path, "--size", 48]
    proc = _cli("stylize", *common, "--steps", 100000, "--save-every", 1, "--trace", trace)
    deadline = time.time() + 90
    while not list(tmp_path.glob("out.step*.png")) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert out.is_file() and (tmp_path / "out.png.ckpt").is_file() and "--resume" in err
    assert json.loads(trace.read_text())["result"]["interrupted"] is True
    for p in tmp_path.glob("out.step*.png"):
        p.unlink()
    done = json.loads(trace.read_text())["steps"][-1]["step"]
    resumed = _cli("stylize", *common, "--steps", done + 3, "--resume", tmp_path / "out.png.ckpt", "--quiet")
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err


def test_help_teaches(tmp_path: Path) -> None:
    result = invoke("stylize", "--help")
    assert result.exit_code == 0
    for option in ("--style-weight", "--preset", "--scales", "--preserve-colors", "--provider", "--trace"):
        assert option in result.output


def _commands(command, path=()):  # type: ignore[no-untyped-def]
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def test_no_help_text_is_swallowed_as_rich_markup() -> None:
    """With rich markup on, an unescaped '[default: ...]' in an option's help vanishes from --help."""
    import typer.main

    bad = [
        f"{' '.join(path) or 'nst-engine'} {param.name}: {param.help!r}"
        for path, command in _commands(typer.main.get_command(app))
        for param in command.params
        if re.search(r"(?<!\\)\[[a-z]", getattr(param, "help", None) or "")
    ]
    assert not bad, "escape '[' as '\\\\[' in these help texts: " + "; ".join(bad)


def test_controls_through_the_cli(inputs: dict[str, Path], model_path: Path, tmp_path: Path, cache_dir: Path) -> None:
    import numpy as np

    left = np.zeros((30, 40, 3), np.uint8)
    left[:, :20] = 255
    images.save(torch.from_numpy(left.transpose(2, 0, 1)[None] / 255.0).float(), tmp_path / "left.png")
    images.save(torch.from_numpy((255 - left).transpose(2, 0, 1)[None] / 255.0).float(), tmp_path / "right.png")
    out, trace = tmp_path / "out.png", tmp_path / "t.json"
    result = invoke(
        "stylize",
        inputs["content"],
        "-s",
        inputs["style"],
        "-s",
        inputs["style"],
        "--mask",
        tmp_path / "left.png",
        "--mask",
        tmp_path / "right.png",
        "--preserve-colors",
        "luminance",
        "--scales",
        2,
        "--scale-steps",
        2,
        "--steps",
        2,
        "--size",
        64,
        "--model",
        model_path,
        "--style-loss",
        "wasserstein",
        "-o",
        out,
        "--trace",
        trace,
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    data = json.loads(trace.read_text())
    assert [s["scale"] for s in data["steps"]] == [0, 0, 1, 1]
    assert data["settings"]["preserve_colors"] == "luminance" and data["settings"]["scales"] == 2
    bad = invoke(
        "stylize",
        inputs["content"],
        "-s",
        inputs["style"],
        "--mask",
        tmp_path / "left.png",
        "--mask",
        tmp_path / "right.png",
        "--model",
        model_path,
        "-o",
        tmp_path / "x.png",
    )
    assert bad.exit_code == 1 and "one --mask per --style" in bad.stderr
