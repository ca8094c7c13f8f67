"""Hostile use of the surfaces that landed last (video, cluster, resume, cache, environment), one case per class:
nothing lost, nothing silently wrong, nothing hung, no traceback. The web page's cases run against a real server
in tests/test_web_security.py. Everything here is local: files in a temporary folder, sockets on 127.0.0.1."""

from __future__ import annotations

import io
import socket
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from nst_engine import images
from nst_engine.checkpoint import Checkpoint
from nst_engine.cluster import MAX_WORKERS, check_workers, parse_cluster
from nst_engine.errors import ConfigError
from nst_engine.flow import FlowCache, read_flow
from nst_engine.records import RunRecord
from nst_engine.video import MANIFEST
from nst_engine.video_io import frame_name
from tests.clips import panned, write_frames
from tests.test_nothing_lost import cli, one_line_error
from tests.test_video import FAST


@pytest.fixture()
def frames(tmp_path: Path) -> Path:
    return write_frames(panned(3, 36, 48), tmp_path / "in")


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# -- data loss ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("named", ["glob", "folder", "symlink", "inside"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_video_never_writes_into_its_input_frames(
    frames: Path, style: Path, model_path: Path, tmp_path: Path, named: str, overwrite: bool
) -> None:
    before = _snapshot(frames)
    link = tmp_path / "link"
    link.symlink_to(frames)
    source, output = {
        "glob": (f"{frames}/*.png", frames),
        "folder": (str(frames), frames),
        "symlink": (str(link), frames),
        "inside": (str(frames), frames / "styled"),
    }[named]
    extra = ["--overwrite"] if overwrite else []
    result = cli("video", source, "-o", output, "--style", style, "--model", model_path, *FAST, *extra)
    one_line_error(result, "input")
    assert _snapshot(frames) == before  # no frame replaced, no manifest or frame added
    assert not (frames / "styled").exists()


def test_a_finished_run_removes_its_checkpoint_and_resume_then_writes_nothing(
    style: Path, model_path: Path, tmp_path: Path, shared_images: Path
) -> None:
    photo = tmp_path / "photo.png"
    images.save(images.load(shared_images / "content_turtle.jpg", 40), photo)
    out = tmp_path / "out.png"
    ckpt = Checkpoint(0, 1, images.load(photo, 32), settings={})
    ckpt.save(tmp_path / "out.png.ckpt")  # left by an interrupted run: a finished run has no more use for it
    result = cli("stylize", photo, style, "-o", out, "--model", model_path, "--size", "32", "--steps", "2",
                 "--overwrite", "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "out.png.ckpt").exists()
    finished = out.read_bytes()
    one_line_error(cli("stylize", "--resume", tmp_path / "out.png.ckpt"), "a finished run removes its checkpoint")
    assert out.read_bytes() == finished


# -- silently wrong ----------------------------------------------------------------------------------------------


def test_video_resume_refuses_other_masks_or_a_replaced_model(
    frames: Path, style: Path, model_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    model = tmp_path / "model.onnx"
    model.write_bytes(model_path.read_bytes())
    args = ["video", frames, "-o", out, "--style", style, "--model", model, *FAST]
    assert cli(*args).exit_code == 0
    (out / frame_name(2)).unlink()  # as if killed before the last frame
    kept = _snapshot(out)
    mask = tmp_path / "keep.png"
    images.save(torch.ones(1, 3, 36, 48), mask)
    one_line_error(cli(*args, "--content-mask", mask), "content mask")
    data = bytearray(model.read_bytes())
    data[-200] ^= 1  # another model at the same path
    model.write_bytes(bytes(data))
    one_line_error(cli(*args), "model")
    assert _snapshot(out) == kept


def _flow_entry(flow: np.ndarray, key: str, declared: tuple[int, ...] | None = None) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, flow=flow, key=np.array(key))
    if declared is None:
        return buffer.getvalue()
    # The same entry whose array header declares another shape (e.g. 80 GB): nothing may be allocated for it.
    with zipfile.ZipFile(buffer) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    header = members["flow.npy"]
    old = f"'shape': {tuple(flow.shape)}".encode()
    members["flow.npy"] = header.replace(old, f"'shape': {declared}".encode().ljust(len(old)))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


@pytest.mark.parametrize(
    ("kind", "said"),
    [("nan", "not finite"), ("inf", "not finite"), ("huge", "further than"), ("declared", "declares")],
)
def test_a_poisoned_flow_cache_entry_is_recomputed_with_a_warning(tmp_path: Path, kind: str, said: str) -> None:
    a, b = panned(2, 24, 32)
    warnings: list[str] = []
    cache = FlowCache(tmp_path / "flows", warnings.append)
    good = cache.flow(a, b)
    key = FlowCache.key(a, b)
    entry = tmp_path / "flows" / key[:2] / f"{key}.npz"
    bad = good.copy()
    if kind == "nan":
        bad[3, 4, 0] = np.nan
    elif kind == "inf":
        bad[0, 0, 1] = np.inf
    elif kind == "huge":
        bad[5, 5, 0] = 1e6
    data = _flow_entry(bad, key, (100_000, 100_000, 2) if kind == "declared" else None)
    entry.write_bytes(data)
    flow, why = read_flow(entry, key, a.shape[:2])
    assert flow is None and said in why
    again = FlowCache(tmp_path / "flows", warnings.append)
    assert np.array_equal(again.flow(a, b), good) and again.misses == 1
    assert any(said in w and "computed again" in w for w in warnings)


def test_a_batch_rerun_with_other_settings_says_so_and_skips_only_the_same(
    style: Path, model_path: Path, tmp_path: Path, shared_images: Path
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("content_turtle.jpg", "content_tubingen.jpg"):
        images.save(images.load(shared_images / name, 40), photos / f"{name[:-4]}.png")
    other = tmp_path / "other.png"
    images.save(images.load(shared_images / "style_shipwreck.jpg", 40), other)
    out = tmp_path / "out"
    args = ["stylize", photos, "--style", style, "--style", other, "-o", out, "--model", model_path, "--size", "32",
            "--steps", "2"]  # fmt: skip
    assert cli(*args, "--style-blend-weights", "3,7").exit_code == 0
    made = _snapshot(out)
    same = cli(*args, "--style-blend-weights", "3,7")
    assert same.exit_code == 0 and "0 done, 2 skipped" in same.stderr
    assert same.stderr.count("made with these settings") == 2
    one_line_error(cli(*args, "--style-blend-weights", "5,5"), "other settings (style_blend_weights)")
    assert _snapshot(out) == made
    both = cli(*args, "--style-blend-weights", "5,5", "--name", "{stem}_{style}_2.png")
    assert both.exit_code == 0 and len(list(out.iterdir())) == 4


# -- hangs -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["ray:::not a host:::", "ray:", "ray:127.0.0.1", "ray:host:99999", "spark"])
def test_bad_cluster_addresses_are_one_line(value: str) -> None:
    with pytest.raises(ConfigError, match="ray or ray:HOST:PORT"):
        parse_cluster(value)


@pytest.mark.parametrize("workers", [0, -1, MAX_WORKERS + 1, 10_000])
def test_workers_are_bounded_for_both_commands(workers: int) -> None:
    with pytest.raises(ConfigError, match=f"--workers must be between 1 and {MAX_WORKERS}"):
        check_workers(workers)


def test_a_closed_cluster_port_is_one_line_at_once(pair: tuple[Path, Path], model_path: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="the cluster extra (the dev extra has it)")
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = time.monotonic()
    result = cli("stylize", pair[0], "--style", pair[1], "-o", tmp_path / "out", "--model", model_path,
                 "--size", "32", "--steps", "2", "--cluster", f"ray:127.0.0.1:{port}")  # fmt: skip
    one_line_error(result, "cannot reach the Ray cluster")
    assert time.monotonic() - start < 20 and not (tmp_path / "out").exists()


def test_video_on_a_cluster_with_bad_workers_writes_nothing(frames: Path, style: Path, model_path: Path,
                                                            tmp_path: Path) -> None:  # fmt: skip
    out = tmp_path / "out"
    result = cli("video", frames, "-o", out, "--style", style, "--model", model_path, *FAST, "--cluster", "ray",
                 "--workers", "-1")  # fmt: skip
    one_line_error(result, "--workers must be between 1")
    assert not out.exists()


# -- internal errors that are now one line ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "codec", "said"),
    [
        ("o.mp4", "aac", "is an audio codec"),
        ("o.webm", "libx264", "cannot write libx264 video into a .webm file"),
        ("o.mp4", "mjpeg", "cannot write mjpeg video into a .mp4 file"),
        ("o.mp4", "nonesuch", "unknown video codec"),
    ],
)
def test_a_bad_codec_is_refused_before_the_first_frame(
    frames: Path, style: Path, model_path: Path, tmp_path: Path, output: str, codec: str, said: str
) -> None:
    start = time.monotonic()
    result = cli("video", frames, "-o", tmp_path / output, "--style", style, "--model", model_path, *FAST,
                 "--codec", codec, "--steps", "500")  # fmt: skip
    one_line_error(result, said)
    assert time.monotonic() - start < 30  # refused before 500 steps were run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "paint.png"]  # no frames folder, no manifest


def test_a_manifest_that_is_a_folder_is_one_line(frames: Path, style: Path, model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / MANIFEST).mkdir(parents=True)
    result = cli("video", frames, "-o", out, "--style", style, "--model", model_path, *FAST, "--overwrite")
    one_line_error(result, "is not a file")


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        ({"bogus": 1}, "a setting this version does not know ('bogus')"),
        ({"size": "abc"}, "--size must be a whole number"),
        ({"style_weight": [1, 2]}, "--style-weight must be a number"),
    ],
)
def test_a_crafted_checkpoint_given_alone_is_one_line(
    pair: tuple[Path, Path], tmp_path: Path, settings: dict[str, object], said: str
) -> None:
    record = RunRecord(pair[0], tmp_path / "out.png", (pair[1],))
    Checkpoint(0, 1, torch.zeros(1, 3, 8, 8), settings=settings, run=record).save(tmp_path / "c.ckpt")
    one_line_error(cli("stylize", "--resume", tmp_path / "c.ckpt"), said)
    assert not (tmp_path / "out.png").exists()


def test_cache_info_reads_only_a_marked_cache_and_never_through_links(tmp_path: Path) -> None:
    start = time.monotonic()
    one_line_error(cli("cache", "info", env={"NST_ENGINE_CACHE": "/"}), "is not an nst-engine cache")
    assert time.monotonic() - start < 10
    cache = tmp_path / "cache"
    (cache / "targets" / "ab").mkdir(parents=True)
    (cache / ".nst-engine-cache").write_text("marker")
    (cache / "targets" / "ab" / ("ab" + "0" * 62 + ".safetensors")).write_bytes(b"x" * 1000)
    big = tmp_path / "elsewhere"
    big.mkdir()
    (big / "data.bin").write_bytes(b"y" * 3_000_000)
    (cache / "targets" / "outside").symlink_to(big)  # never followed
    result = cli("cache", "info", "--cache-dir", cache)
    assert result.exit_code == 0 and "targets:  1" in result.stdout and "size:     0.0 MB" in result.stdout


def test_a_symlink_loop_is_one_line_wherever_it_is_given(pair: tuple[Path, Path], model_path: Path,
                                                         tmp_path: Path) -> None:  # fmt: skip
    loop_a, loop_b = tmp_path / "a", tmp_path / "b"
    loop_a.symlink_to(loop_b)
    loop_b.symlink_to(loop_a)
    base = ["--model", model_path, "--size", "32", "--steps", "1"]
    one_line_error(cli("stylize", loop_a, pair[1], "-o", tmp_path / "o.png", *base), "symlink")
    one_line_error(cli("stylize", pair[0], loop_a, "-o", tmp_path / "o.png", *base), "symlink")
    one_line_error(cli("stylize", pair[0], pair[1], "-o", loop_a, *base), "symlink")
    assert not (tmp_path / "o.png").exists()


def test_a_huge_style_scale_is_refused_before_anything_is_allocated(
    pair: tuple[Path, Path], model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nst_engine.memory

    monkeypatch.setattr(nst_engine.memory, "available_bytes", lambda _device: 8 << 30)  # an 8 GiB machine
    result = cli("stylize", pair[0], pair[1], "-o", tmp_path / "o.png", "--model", model_path, "--size", "64",
                 "--style-scale", "100", "--steps", "1")  # fmt: skip
    one_line_error(result, "use --style-scale")
    assert not (tmp_path / "o.png").exists()


# -- resources ---------------------------------------------------------------------------------------------------


def test_a_huge_sparse_manifest_is_not_read(frames: Path, style: Path, model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with open(out / MANIFEST, "wb") as handle:
        handle.truncate(2 << 30)  # 2 GB of nothing, on disk as a few blocks
    start = time.monotonic()
    one_line_error(cli("video", frames, "-o", out, "--style", style, "--model", model_path, *FAST),
                   "holds frames of another run")  # fmt: skip
    assert time.monotonic() - start < 30
    assert (out / MANIFEST).stat().st_size == 2 << 30  # refused, left as it was


def test_a_jpeg_that_declares_more_pixels_than_its_bytes_hold_is_refused(tmp_path: Path) -> None:
    _, encoded = cv2.imencode(".jpg", np.zeros((8000, 8000, 3), np.uint8))
    data = encoded.tobytes()
    start_of_scan = data.find(b"\xff\xda")
    crafted = tmp_path / "crafted.jpg"
    crafted.write_bytes(data[: start_of_scan + 2000] + b"\xff\xd9")  # 8000x8000 px declared, 2 KB of data
    with pytest.raises(images.ImageError, match="declares 8000x8000 pixels but holds only"):
        images.read_image(crafted)
    whole = tmp_path / "whole.jpg"
    whole.write_bytes(data)  # the same picture, whole: read
    assert images.read_image(whole).shape == (8000, 8000, 3)
