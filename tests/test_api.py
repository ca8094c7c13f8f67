"""The Python API offers what the CLI does: masks, an init image, resume, events and a stop request."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nst_engine import images
from nst_engine.api import Checkpoint, ModelSpec, Session, StyleConfig, stylize_file
from nst_engine.errors import ConfigError
from nst_engine.events import Event, ImageDone, ImageStarted, Note, ScaleStarted, StepDone
from tests.conftest import ROOT

SIZE = 48


@pytest.fixture()
def pair(shared_images: Path) -> tuple[Path, Path]:
    return shared_images / "content_turtle.jpg", shared_images / "style_great_wave.jpg"


def _halves(tmp_path: Path, content: Path) -> tuple[Path, Path]:
    """Masks the content's shape: left half white, and right half white."""
    h, w = images.load(content, SIZE).shape[-2:]
    left = torch.zeros(1, 3, h, w)
    left[..., : w // 2] = 1
    paths = tmp_path / "left.png", tmp_path / "right.png"
    images.save(left, paths[0])
    images.save(1 - left, paths[1])
    return paths


def test_masks_confine_each_style_to_its_region(
    pair: tuple[Path, Path], model_path: Path, tmp_path: Path, shared_images: Path
) -> None:
    content, wave = pair
    scream = shared_images / "style_the_scream.jpg"
    left, right = _halves(tmp_path, content)
    config = StyleConfig(size=SIZE, steps=8, init="random")
    masked = stylize_file(content, [wave, scream], tmp_path / "m.png", config, masks=[left, right], model=model_path)
    stylize_file(content, [wave, scream], tmp_path / "s.png", config, masks=[right, left], model=model_path)
    assert masked.status == "done" and (tmp_path / "m.png").is_file()
    a, b = images.load(tmp_path / "m.png"), images.load(tmp_path / "s.png")
    assert (a - b).abs().mean() > 0.01  # which style goes where changes the picture
    with pytest.raises(ConfigError, match="one --mask per --style"):
        stylize_file(content, [wave], tmp_path / "x.png", config, masks=[left, right], model=model_path)
    assert not (tmp_path / "x.png").exists()


def test_a_content_mask_keeps_the_photo_where_it_is_white(
    pair: tuple[Path, Path], model_path: Path, tmp_path: Path
) -> None:
    content, wave = pair
    left, _ = _halves(tmp_path, content)
    result = stylize_file(content, wave, tmp_path / "k.png", size=SIZE, steps=6, content_mask=left, model=model_path)
    photo = images.load(content, SIZE)
    assert result.image is not None
    w = photo.shape[-1]
    kept = (result.image[..., : w // 2 - 2] - photo[..., : w // 2 - 2]).abs().mean()
    changed = (result.image[..., w // 2 + 2 :] - photo[..., w // 2 + 2 :]).abs().mean()
    assert kept < 0.01 < changed


def test_an_init_image_is_where_the_run_starts(pair: tuple[Path, Path], model_path: Path, tmp_path: Path) -> None:
    content, wave = pair
    gray = tmp_path / "gray.png"
    images.save(torch.full((1, 3, 36, SIZE), 0.5), gray)
    zero = stylize_file(content, wave, tmp_path / "z.png", size=SIZE, steps=0, init_image=gray, model=model_path)
    assert zero.image is not None and torch.allclose(
        zero.image, torch.full_like(zero.image, 128 / 255), atol=1e-6
    )  # 0.5 as 8 bits
    by_setting = stylize_file(content, wave, tmp_path / "y.png", size=SIZE, steps=0, init=str(gray), model=model_path)
    assert by_setting.image is not None and torch.equal(by_setting.image, zero.image)


def test_resume_through_the_api_ends_where_an_uninterrupted_run_ends(
    pair: tuple[Path, Path], model_path: Path, tmp_path: Path
) -> None:
    content, wave = pair
    config = StyleConfig(size=SIZE, steps=8)
    full = stylize_file(content, wave, tmp_path / "full.png", config, model=model_path)
    stopped: list[Event] = []

    def stop_after_three(event: Event) -> None:
        stopped.append(event)
        if isinstance(event, StepDone) and event.record["step"] == 3:
            session.stop("test")

    session = Session(config, [wave], model=ModelSpec(model=model_path), on_event=stop_after_three)
    first = session.stylize(content, tmp_path / "part.png")
    assert first.status == "interrupted" and first.checkpoint == tmp_path / "part.png.ckpt"
    assert isinstance(stopped[-1], ImageDone) and stopped[-1].stop_reason == "test"
    checkpoint = Checkpoint.load(first.checkpoint, config)
    assert (checkpoint.scale, checkpoint.step) == (0, 3)
    rest = stylize_file(content, wave, tmp_path / "rest.png", config, model=model_path, resume=first.checkpoint)
    assert rest.status == "done" and len(rest.steps) == 5
    assert rest.image is not None and full.image is not None
    assert torch.equal(rest.image, full.image)
    with pytest.raises(ConfigError, match="other settings"):
        stylize_file(
            content, wave, tmp_path / "r2.png", config.replace(tv_weight=1.0), model=model_path, resume=first.checkpoint
        )


def test_a_session_opens_once_and_tells_what_it_does(pair: tuple[Path, Path], model_path: Path, tmp_path: Path) -> None:
    content, wave = pair
    events: list[Event] = []
    session = Session(StyleConfig(size=2 * SIZE, steps=3, scales=2), [wave], model=ModelSpec(model=model_path))
    session.subscribe(events.append)
    tensor = images.load(content, 2 * SIZE)
    first = session.stylize(tensor)  # a tensor in, nothing written
    second = session.stylize(content, tmp_path / "b.png")
    assert (
        first.output is None
        and second.output == tmp_path / "b.png"
        and list(tmp_path.iterdir()) == [tmp_path / "b.png"]
    )
    kinds = [type(e).__name__ for e in events]
    assert kinds.count("Note") >= 2 and kinds.count("ImageStarted") == 2 and kinds.count("ImageDone") == 2
    scales = [e for e in events if isinstance(e, ScaleStarted)]
    assert [(s.scale, s.scales) for s in scales] == [(0, 2), (1, 2)] * 2
    steps = [e for e in events if isinstance(e, StepDone)]
    assert len(steps) == 2 * (1 + 3) and all(set(e.record["losses"]) >= {"content", "style", "total"} for e in steps)
    assert isinstance(events[0], Note) and any(isinstance(e, ImageStarted) for e in events)
    assert first.image is not None and second.image is not None and torch.equal(first.image, second.image)


def _piped(content: Path, style: Path, out: Path, model: Path, *extra: str) -> tuple[int, str]:
    """Run the CLI with stderr into a file, as a batch job or CI would; return its exit code and that log."""
    log = out.with_suffix(".log")
    files = [str(content), str(style), "-o", str(out), "--model", str(model)]
    with log.open("w") as handle:
        done = subprocess.run(
            [sys.executable, "-m", "nst_engine", "stylize", *files, "--size", str(SIZE), *extra],
            stderr=handle,
            stdout=subprocess.DEVNULL,
            cwd=ROOT,
            timeout=300,
            check=False,
        )
    return done.returncode, log.read_text()


def test_a_piped_run_logs_plain_progress_lines(pair: tuple[Path, Path], model_path: Path, tmp_path: Path) -> None:
    """Output that is not a terminal gets a plain line per scale start, each scale's first and last step and every
    few seconds between (step, losses, it/s, ETA), and nothing that redraws."""
    code, text = _piped(*pair, tmp_path / "o.png", model_path, "--steps", "20")
    assert code == 0, text
    lines = text.splitlines()
    assert "\r" not in text and "\x1b[" not in text  # no redraws, no colour codes
    steps = [line for line in lines if line.startswith("step ")]
    assert steps[0].startswith("step 1/20 ") and steps[-1].startswith("step 20/20 ")
    assert 2 <= len(steps) <= 20 and all("it/s" in s and "total" in s for s in steps)
    assert "ETA" in steps[-1]
    assert any(line.startswith("wrote ") for line in lines) and len(lines) < 30
    code, quiet = _piped(*pair, tmp_path / "q.png", model_path, "--steps", "5", "--quiet")
    assert code == 0 and not any(line.startswith("step ") for line in quiet.splitlines())


@pytest.mark.parametrize(("name", "bits"), [("print.tif", 8), ("print16.png", 16)])
def test_outputs_for_print_keep_16_bits(
    name: str, bits: int, pair: tuple[Path, Path], model_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / name
    result = stylize_file(*pair, out, size=SIZE, steps=2, model=model_path, bit_depth=bits)
    import cv2

    stored = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert stored.dtype.name == "uint16" and stored.shape[:2] == tuple(result.image.shape[-2:])  # type: ignore[union-attr]
    back = images.load(out)
    assert result.image is not None and float((back - result.image).abs().max()) < 2e-5  # 8 bits would be 2e-3
    with pytest.raises(ConfigError, match="JPEG has 8 bits"):
        stylize_file(*pair, tmp_path / "x.jpg", size=SIZE, steps=1, model=model_path, bit_depth=16)
