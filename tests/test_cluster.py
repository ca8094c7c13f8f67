"""Batches on a real local Ray cluster (engine.cluster): the same bytes as the local runner, a worker killed by
its pid mid-run has its image retried, a bad file is reported once, a rerun skips what is done. Ray is started
on this machine only (127.0.0.1, two worker CPUs) and stopped by the tests that start it."""

from __future__ import annotations

import itertools
import os
import signal
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nst_engine import images
from nst_engine.api import Session
from nst_engine.cli import app
from nst_engine.cluster import ClusterProgress, ClusterRunner, parse_cluster, require_ray
from nst_engine.config import StyleConfig
from nst_engine.errors import ConfigError
from nst_engine.jobs import Job
from nst_engine.spec import ModelSpec

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
    temporary = Path(tempfile.gettempdir())
    workers_before = set(temporary.glob("nst-engine-worker-*"))
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
    assert set(temporary.glob("nst-engine-worker-*")) <= workers_before  # no worker leaves its model copy behind


def test_a_cluster_never_starts_more_workers_than_it_has_cpus(local_ray, model_path: Path, shared_images: Path) -> None:  # type: ignore[no-untyped-def]
    from nst_engine.cluster.connect import connect

    said: list[str] = []
    for asked, started in ((None, 2), (1, 1), (2, 2), (4, 2), (256, 2)):
        runner = ClusterRunner(_session(model_path, shared_images), None, asked, on_event=said.append)
        # (actors, CPUs each) on a 2-CPU cluster
        assert connect(runner.ray, None, asked, said.append) == (started, 2 // started), asked


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


def test_pass_one_makes_each_scenes_keys_in_order_and_pass_two_each_chunk_from_its_key() -> None:
    from nst_engine.cluster.video import Piece, chunk_pieces, plan_pieces

    spans = [(0, 4), (4, 8), (8, 10), (10, 12), (12, 16)]  # a new scene at frame 11
    cuts = {10}
    assert plan_pieces(spans, cuts, set())[0] == [Piece((0, 4, 8), 0, True), Piece((10, 12), 0, True)]
    # a rerun: the first scene's keys 1 and 5 are on disk, so the chain goes on from them (given), as a whole run
    assert plan_pieces(spans, cuts, {0, 4, 10, 12})[0][0] == Piece((0, 4, 8), 2, True)
    assert not any(piece.keys for piece in plan_pieces(spans, cuts, {0, 4, 8, 10, 12})[0])
    assert Piece((0, 4, 8), 2, True).made == (8,)
    done = {0, 1, 2, 3, 4, 8, 9, 10, 11, 12}
    # each chunk is drawn toward the next key of its scene (ahead); a scene's last chunk toward none
    assert chunk_pieces(spans[:3], done) == [Piece((4, 5, 6, 7), 1, ahead=8)]
    assert chunk_pieces(spans[3:], done) == [Piece((12, 13, 14, 15), 1)]
    # one queue: a scene's chunks are queued when its keys are made; a scene with every key on disk starts at once
    first, after = plan_pieces(spans, cuts, {0, 4, 8})
    assert first == [Piece((0, 1, 2, 3), 1, ahead=4), Piece((4, 5, 6, 7), 1, ahead=8), Piece((8, 9), 1),
                     Piece((10, 12), 0, True)]  # fmt: skip
    assert after == {Piece((10, 12), 0, True): [Piece((10, 11), 1, ahead=12), Piece((12, 13, 14, 15), 1)]}


@pytest.mark.slow
def test_a_clip_runs_in_two_passes_keys_then_chunks_and_a_rerun_makes_only_what_is_missing(
    local_ray, model_path: Path, shared_images: Path, tmp_path: Path
) -> None:
    from nst_engine.cluster import chunks_of, run_video
    from nst_engine.video import VideoSettings
    from nst_engine.video_io import frame_name, read_clip
    from tests.clips import panned, write_frames

    frames = panned(6, 48, 64)
    cut = [*frames[:2], *[255 - f for f in frames[2:]]]  # a scene cut before frame 3
    assert chunks_of(cut, 3) == [(0, 2), (2, 5), (5, 6)]
    assert chunks_of(frames, 3) == [(0, 3), (3, 6)]
    source = write_frames(frames, tmp_path / "in")
    clip = read_clip(str(source), 48)
    config = StyleConfig(size=48, steps=3)
    session = Session(config, [shared_images / "style_great_wave.jpg"], model=ModelSpec(model=model_path))
    settings = VideoSettings(frame_steps=2, chunk_frames=3)
    out = tmp_path / "out"
    result = run_video(ClusterRunner(session, None, 2), clip, out, str(source), settings)
    assert result.status == "done" and (result.chunks, result.made_chunks) == (2, 2)
    assert result.join_error is not None and result.within_error is not None
    assert sorted(p.name for p in out.glob("frame_*.png")) == [frame_name(t) for t in range(6)]
    assert result.keys == 2  # frames 1 and 4, in order; then the two chunks' other frames
    again = run_video(ClusterRunner(session, None, 2), clip, out, str(source), settings)
    assert again.made_chunks == 0 and again.keys == 0  # a rerun redoes nothing that is on disk
    whole = {t: (out / frame_name(t)).read_bytes() for t in range(6)}
    for t in (3, 4):  # the second key and a frame after it lost: the rerun makes them again, the same bytes
        (out / frame_name(t)).unlink()
    third = run_video(ClusterRunner(session, None, 2), clip, out, str(source), settings)
    assert (third.keys, third.made_chunks) == (1, 1)
    assert {t: (out / frame_name(t)).read_bytes() for t in range(6)} == whole


@pytest.mark.slow
def test_images_of_one_size_go_together_and_each_result_counts_its_overhead(
    local_ray, photos: list[Path], model_path: Path, shared_images: Path, tmp_path: Path
) -> None:
    for tall in photos[1::2]:  # every other photo on its side: two sizes, interleaved
        images.save(images.load(tall).transpose(-1, -2).contiguous(), tall)
    sizes = {p: images.load(p, CONFIG.size).shape[-2:] for p in photos}
    assert len(set(sizes.values())) == 2 and sizes[photos[0]] != sizes[photos[1]]  # given interleaved
    order: list[Path] = []
    runner = ClusterRunner(_session(model_path, shared_images), None, 1,
                           on_dispatch=lambda job, _pid: order.append(Path(job.content)))  # fmt: skip
    summary = runner.run(_jobs(photos, tmp_path / "out"))
    shapes = [sizes[p] for p in order]
    assert sorted(order) == sorted(photos)
    assert sum(a != b for a, b in itertools.pairwise(shapes)) == 1  # one change of size, not three
    assert summary.actor_start > 0 and all(0 <= r.overhead < 60 for r in summary.results)


def test_bad_cluster_values_and_a_missing_ray_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_cluster("ray") is None and parse_cluster("ray:127.0.0.1:6379") == "127.0.0.1:6379"
    with pytest.raises(ConfigError, match="ray or ray:HOST:PORT"):
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
    # Mixed sizes and --weights random, as a user would run it: the bytes equal a local run's at a worker's
    # thread count (2 workers on 2 CPUs: one each). Random weights were once made at the caller's thread count,
    # so the driver's network was not a one-thread process's.
    args = ["stylize", *map(str, photos), "--style", str(style), "--weights", "random", "--size", "32", "--steps", "3"]
    result = CliRunner().invoke(app, [*args, "-o", str(out), "--cluster", "ray", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "4 done, 0 skipped, 0 failed, 0 retried" in " ".join(result.output.split())
    assert len(list((tmp_path / "out").glob("*.png"))) == 4
    assert not ray.is_initialized()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert CliRunner().invoke(app, [*args, "-o", str(tmp_path / "local")]).exit_code == 0
    finally:
        torch.set_num_threads(threads)
    for made in sorted(out.glob("*.png")):
        assert made.read_bytes() == (tmp_path / "local" / made.name).read_bytes(), made.name


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _ray_env(tmp_path: Path) -> dict[str, str]:
    """The environment of every node and driver of a test cluster: Ray's token authentication with a token of
    this test's own (Ray's servers listen on every interface; the token keeps others out), no usage stats."""
    import secrets

    token = secrets.token_hex(32)
    return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0",
            "HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}  # fmt: skip


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "nst_engine", *args]


def _read_until(process, text: str, seconds: float) -> list[str]:  # type: ignore[no-untyped-def]
    """Lines of ``process``'s output up to the first holding ``text`` (the test fails after ``seconds``)."""
    import selectors
    import time

    lines: list[str] = []
    deadline = time.monotonic() + seconds
    with selectors.DefaultSelector() as wait:
        wait.register(process.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if wait.select(timeout=1.0):
                line = process.stdout.readline()
                if not line:
                    break
                lines.append(line)
                if text in line:
                    return lines
    process.kill()
    raise AssertionError(f"no line with {text!r} in {seconds:.0f}s:\n{''.join(lines)}")


@pytest.mark.slow
def test_a_node_lost_midway_on_a_two_node_cluster_moves_its_work_and_a_rerun_skips_everything(
    model_path: Path, shared_images: Path, tmp_path: Path
) -> None:
    """Issue 24's check: ``ray start --head`` plus a second node, both on 127.0.0.1; the driver is the real
    command. The second node is killed (its raylet and workers) once the first image is done: every output is
    still there, once, with the local runner's bytes, the summary counts the retry, and a rerun skips them all."""
    import shutil
    import subprocess

    if ray.is_initialized():
        ray.shutdown()
    command = shutil.which("ray", path=str(Path(sys.executable).parent))
    assert command, "the ray command is installed with Ray"
    photos = []
    for i, name in enumerate(["content_turtle.jpg", "content_tubingen.jpg"] * 3):
        photos.append(tmp_path / f"photo{i}.png")
        images.save(images.load(shared_images / name, 48), photos[-1])
    config = StyleConfig(size=48, steps=200)  # several seconds an image: the node is lost mid-image
    style = shared_images / "style_great_wave.jpg"
    local = [Job(p, tmp_path / "local" / f"{p.stem}_style_great_wave.png") for p in photos]  # the CLI's names
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # each node has one CPU, so each worker one thread
    try:
        Session(config, [style], model=ModelSpec(model=model_path)).run(local)
    finally:
        torch.set_num_threads(threads)
    env = _ray_env(tmp_path)
    address = f"127.0.0.1:{_free_port()}"
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    out = tmp_path / "ray"
    job = _cli("stylize", *map(str, photos), "--style", str(style), "-o", str(out), "--model", str(model_path),
               "--size", "48", "--steps", "200", "--cluster", f"ray:{address}")  # fmt: skip
    node = None
    try:
        subprocess.run([command, "start", "--head", f"--port={address.split(':')[1]}", "--include-dashboard=false",
                        *common], check=True, capture_output=True, timeout=120, env=env)  # fmt: skip
        # The second node in a process group of its own, to be lost all at once.
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        node = subprocess.Popen([command, "start", f"--address={address}", "--block", *common], env=env,
                                start_new_session=True, **quiet)  # fmt: skip
        for _ in range(60):  # until the second node has joined
            status = subprocess.run([command, "status", f"--address={address}"], capture_output=True, text=True,
                                    timeout=60, env=env).stdout  # fmt: skip
            if status.count(" node_") >= 2:
                break
        driver = subprocess.Popen(job, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = _read_until(driver, "ray: 2 workers", 180)  # both nodes' workers hold a session
        lines += _read_until(driver, "done ", 180)
        os.killpg(node.pid, signal.SIGKILL)
        rest, _ = driver.communicate(timeout=300)
        output = " ".join("".join([*lines, rest]).split())
        assert driver.returncode == 0, output
        assert "6 done, 0 skipped, 0 failed" in output and "died" in output, output
        assert "0 retried" not in output, output
        assert sorted(p.name for p in out.iterdir()) == sorted(j.output.name for j in local)  # once, no leftovers
        for theirs in local:
            assert (out / theirs.output.name).read_bytes() == theirs.output.read_bytes(), theirs.output.name
        again = subprocess.run(job, env=env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "0 done, 6 skipped" in " ".join((again.stdout + again.stderr).split()), again.stdout + again.stderr
    finally:
        if node is not None and node.poll() is None:
            os.killpg(node.pid, signal.SIGKILL)
        subprocess.run([command, "stop", "--force"], capture_output=True, timeout=120, env=env)


@pytest.mark.slow
def test_ctrl_c_on_the_driver_stops_the_cluster_work_and_the_rerun_continues(
    photos: list[Path], model_path: Path, shared_images: Path, tmp_path: Path
) -> None:
    import subprocess

    env = _ray_env(tmp_path)
    out = tmp_path / "out"
    style = shared_images / "style_great_wave.jpg"
    job = _cli("stylize", *map(str, photos), "--style", str(style), "-o", str(out), "--model", str(model_path),
               "--size", "48", "--steps", "60", "--cluster", "ray", "--workers", "1")  # fmt: skip
    driver = subprocess.Popen(job, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = _read_until(driver, "done ", 240)
    driver.send_signal(signal.SIGINT)
    rest, _ = driver.communicate(timeout=120)
    output = "".join([*lines, rest])
    assert driver.returncode == 130, output
    assert "rerun the same command to continue" in output and "Traceback" not in output, output
    finished = sorted(p.name for p in out.iterdir())
    assert finished and len(finished) < len(photos), output  # stopped partway
    assert all(name.endswith(".png") and not name.startswith(".") for name in finished)  # nothing half-written
    for name in finished:
        assert images.read_image(out / name).shape[0] > 0  # each decodes whole
    again = subprocess.run(job, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    summary = " ".join((again.stdout + again.stderr).split())
    assert f"{len(photos) - len(finished)} done, {len(finished)} skipped, 0 failed" in summary, summary
