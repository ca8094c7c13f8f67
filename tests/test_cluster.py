"""Batches on a real local Ray cluster (engine.cluster): the same bytes as the local runner, a worker killed by
its pid mid-run has its image retried, a bad file is reported once, a rerun skips what is done. Ray is started
on this machine only (127.0.0.1, two worker CPUs) and stopped by the tests that start it."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from engine import images
from engine.cli import app
from engine.cluster import ClusterProgress, ClusterRunner, parse_cluster, require_ray
from engine.config import StyleConfig
from engine.errors import ConfigError
from engine.jobs import Job
from engine.model import ModelSpec
from engine.session import Session

ray = pytest.importorskip("ray", reason="Ray is the cluster extra: pip install -e '.[cluster]' (the dev extra has it)")

CONFIG = StyleConfig(size=32, steps=3)


@pytest.fixture(scope="module")
def local_ray():  # type: ignore[no-untyped-def]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()


@pytest.fixture()
def photos(tmp_path: Path, shared_images: Path) -> list[Path]:
    out = []
    for i, name in enumerate(["content_turtle.jpg", "content_tubingen.jpg"] * 2):
        path = tmp_path / f"photo{i}.png"
        images.save(images.load(shared_images / name, 40 + 8 * i), path)
        out.append(path)
    return out


def _session(model_path: Path, shared_images: Path) -> Session:
    return Session(CONFIG, [shared_images / "style_great_wave.jpg"], model=ModelSpec(model=model_path))


def _jobs(photos: list[Path], folder: Path) -> list[Job]:
    return [Job(p, folder / f"{p.stem}.png") for p in photos]


@pytest.mark.slow
def test_outputs_equal_the_local_runners_and_a_killed_workers_image_is_retried(
    local_ray, photos: list[Path], model_path: Path, shared_images: Path, tmp_path: Path
) -> None:
    local = _jobs(photos, tmp_path / "local")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a worker's share (2 CPUs, 2 workers): bytes are equal for equal thread counts
    try:
        _session(model_path, shared_images).run(local)
    finally:
        torch.set_num_threads(threads)
    killed: list[int] = []

    def kill_the_second(job: Job, pid: int) -> None:
        if job.content == photos[1] and not killed:
            killed.append(pid)
            os.kill(pid, signal.SIGKILL)  # the worker that just took photo 1, mid-image

    on_ray = _jobs(photos, tmp_path / "ray")
    seen: list[ClusterProgress] = []
    runner = ClusterRunner(_session(model_path, shared_images), None, 2, on_dispatch=kill_the_second,
                           on_progress=seen.append)  # fmt: skip
    summary = runner.run(on_ray)
    assert killed and summary.retried == 1
    assert (seen[-1].done, seen[-1].retried, seen[-1].total) == (4, 1, 4)
    assert any(len([w for w in p.workers.values() if w != "idle"]) == 2 for p in seen)  # both workers busy at once
    assert summary.count("done") == 4 and summary.count("failed") == 0
    retried = [r for r in summary.results if r.retries]
    assert [r.content for r in retried] == [str(photos[1])] and retried[0].worker != killed[0]
    for ours, theirs in zip(on_ray, local, strict=True):
        assert ours.output.read_bytes() == theirs.output.read_bytes(), ours.output
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == sorted(j.output.name for j in on_ray)


@pytest.mark.slow
def test_a_bad_file_is_reported_once_and_a_rerun_skips_what_is_done(
    local_ray, photos: list[Path], model_path: Path, shared_images: Path, tmp_path: Path
) -> None:
    photos[2].write_bytes(b"not an image")
    jobs = _jobs(photos, tmp_path / "out")
    summary = ClusterRunner(_session(model_path, shared_images), None, 2).run(jobs)
    assert summary.count("done") == 3 and summary.count("failed") == 1 and summary.retried == 0
    assert not jobs[2].output.exists()
    before = {j.output: j.output.stat().st_mtime_ns for j in jobs if j.output.exists()}
    again = ClusterRunner(_session(model_path, shared_images), None, 2).run(jobs)
    assert again.count("skipped") == 3 and again.count("failed") == 1
    assert {o: o.stat().st_mtime_ns for o in before} == before


@pytest.mark.slow
def test_a_clip_runs_in_chunks_that_start_one_frame_early(
    local_ray, model_path: Path, shared_images: Path, tmp_path: Path
) -> None:
    from engine.cluster import chunks_of, run_video
    from engine.video import VideoSettings
    from engine.video_io import frame_name, read_clip
    from tests.clips import panned, write_frames

    frames = panned(6, 48, 64)
    cut = [*frames[:2], *[255 - f for f in frames[2:]]]  # a scene cut before frame 3
    assert chunks_of(cut, 3) == [(0, 2), (2, 5), (5, 6)]
    assert chunks_of(frames, 3) == [(0, 3), (3, 6)]
    source = write_frames(frames, tmp_path / "in")
    clip = read_clip(str(source), 48)
    config = StyleConfig(size=48, steps=3)
    session = Session(config, [shared_images / "style_great_wave.jpg"], model=ModelSpec(model=model_path))
    settings = VideoSettings(frame_steps=2)
    out = tmp_path / "out"
    result = run_video(ClusterRunner(session, None, 2), clip, out, str(source), settings, 3)
    assert result.status == "done" and (result.chunks, result.made_chunks) == (2, 2)
    assert result.join_error is not None and result.within_error is not None
    assert sorted(p.name for p in out.glob("frame_*.png")) == [frame_name(t) for t in range(6)]
    again = run_video(ClusterRunner(session, None, 2), clip, out, str(source), settings, 3)
    assert again.made_chunks == 0  # a rerun redoes nothing that is on disk


def test_bad_cluster_values_and_a_missing_ray_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_cluster("ray") is None and parse_cluster("ray:127.0.0.1:6379") == "127.0.0.1:6379"
    with pytest.raises(ConfigError, match="ray or ray:ADDRESS"):
        parse_cluster("spark")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ConfigError, match=r"pip install 'nst-engine\[cluster\]'"):
        require_ray()


@pytest.mark.slow
def test_the_cli_runs_a_batch_on_ray_and_stops_the_cluster_it_started(
    photos: list[Path], model_path: Path, shared_images: Path, tmp_path: Path
) -> None:
    if ray.is_initialized():
        ray.shutdown()
    style = shared_images / "style_great_wave.jpg"
    out = tmp_path / "out"
    args = ["stylize", *map(str, photos), "--style", str(style), "-o", str(out), "--model", str(model_path)]
    result = CliRunner().invoke(app, [*args, "--size", "32", "--steps", "3", "--cluster", "ray", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "4 done, 0 skipped, 0 failed, 0 retried" in " ".join(result.output.split())
    assert len(list((tmp_path / "out").glob("*.png"))) == 4
    assert not ray.is_initialized()


@pytest.mark.slow
def test_a_cluster_of_two_nodes_started_with_ray_start(
    photos: list[Path], model_path: Path, shared_images: Path, tmp_path: Path
) -> None:
    import shutil
    import socket
    import subprocess

    if ray.is_initialized():
        ray.shutdown()
    command = shutil.which("ray", path=str(Path(sys.executable).parent))
    assert command, "the ray command is installed with Ray"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"127.0.0.1:{port}"
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    try:
        subprocess.run([command, "start", "--head", f"--port={port}", "--include-dashboard=false", *common],
                       check=True, capture_output=True, timeout=120, env=env)  # fmt: skip
        subprocess.run([command, "start", f"--address={address}", *common],
                       check=True, capture_output=True, timeout=120, env=env)  # fmt: skip
        style = shared_images / "style_great_wave.jpg"
        out = tmp_path / "out"
        args = ["stylize", *map(str, photos), "--style", str(style), "-o", str(out), "--model", str(model_path)]
        result = CliRunner().invoke(app, [*args, "--size", "32", "--steps", "3", "--cluster", f"ray:{address}"])
        assert result.exit_code == 0, result.output
        assert "4 done" in result.output and "2 workers" in " ".join(result.output.split())
    finally:
        if ray.is_initialized():
            ray.shutdown()
        subprocess.run([command, "stop", "--force"], capture_output=True, timeout=120, env=env)
