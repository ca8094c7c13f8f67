"""Batches on a Ray cluster: ``nst-engine stylize PHOTOS... --style S -o DIR --cluster ray[:ADDRESS]``.

The driver opens the session (exporting the model into the cache if need be), computes every scale's style
targets once, and puts the model file, the style images and those targets in Ray's object store once. Each
worker is an actor that opens its own session from them, once, with the style targets preloaded, and then
takes image after image; its torch threads are its CPU share. The driver reads each content image and sends
its pixels, and writes each result itself, atomically, so a worker needs no shared file system and no output
is written twice.

A worker process that dies mid-image (killed, out of memory, its node lost) has its image retried on another
worker, and a replacement actor is started. An image that fails for its own reasons (a bad file) is reported
once and not retried. Outputs that exist are skipped (a rerun continues), and Ctrl-C stops the cluster's work
with nothing half-written.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nst_engine import images
from nst_engine.config import StyleConfig
from nst_engine.errors import ConfigError, StyleTransferError
from nst_engine.files import write_atomic
from nst_engine.flow import FlowCache, certainty, warp
from nst_engine.jobs import Job, check_writes
from nst_engine.resize import fit_long_side
from nst_engine.session import Opener, Session
from nst_engine.spec import ModelSpec
from nst_engine.video import VideoRun
from nst_engine.video_io import frame_name

#: How many times an image is retried after its worker died, before it is reported as failed.
MAX_RETRIES = 3
#: With no worker left, how long to wait for a replacement to start before the rest of the job fails.
STALL_SECONDS = 120.0


#: How long joining a running cluster may take (connecting included) before the run fails in one line.
JOIN_SECONDS = 30.0
#: The most workers a run starts, whatever is asked (each is a process holding a network).
MAX_WORKERS = 256
_HOST = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?)$")


def parse_cluster(value: str) -> str | None:
    """``ray`` (start Ray here) or ``ray:HOST:PORT`` (join a running cluster): the address, or None."""
    if value == "ray":
        return None
    address = value[4:] if value.startswith("ray:") else ""
    host, _, port = address.rpartition(":")
    if not (_HOST.match(host) and port.isdigit() and 0 < int(port) < 65536):
        raise ConfigError(f"--cluster must be ray or ray:HOST:PORT (e.g. ray:127.0.0.1:6379), not '{value[:80]}'")
    return address


def check_workers(workers: int | None) -> None:
    """--workers, for stylize and video alike: unset (one per CPU), or 1 to MAX_WORKERS."""
    if workers is not None and not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(f"--workers must be between 1 and {MAX_WORKERS}, not {workers}; leave it out for one per CPU")


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("--cluster ray needs Ray: pip install 'nst-engine[cluster]'") from None
    return ray


@dataclass
class ClusterResult:
    """How one image ended on the cluster."""

    content: str
    output: Path
    status: str  # "done", "skipped", "failed"
    seconds: float = 0.0
    message: str = ""
    retries: int = 0
    worker: int = 0  # the pid of the worker that made it
    overhead: float = 0.0  # the driver's round trip less the worker's time: transfers and scheduling


@dataclass
class ClusterSummary:
    results: list[ClusterResult] = field(default_factory=list)
    retried: int = 0
    workers: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    actor_start: float = 0.0  # from asking for the workers to all of them holding an open session

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)


@dataclass(frozen=True)
class ClusterProgress:
    """Where a cluster batch stands, sent to the driver's listener after every change."""

    total: int
    done: int
    failed: int
    skipped: int
    retried: int
    per_minute: float
    workers: dict[int, str]  # pid -> the image it is on, or "idle"


def _lost(ray: Any) -> tuple[type[BaseException], ...]:
    """The errors of a task whose worker is gone (killed, out of memory, its node lost), not of its image."""
    e = ray.exceptions
    return (e.RayActorError, e.WorkerCrashedError, e.NodeDiedError, e.ObjectLostError)


class _Pool:
    """The actors of one job: idle ones, and replacements that are still starting.

    A replacement is not waited for: on a cluster that lost a node there may be no CPU for it until the job ends,
    and the work goes on with the workers that are left. ``wait`` returns finished tasks and moves started
    replacements to ``idle``."""

    def __init__(self, ray: Any, spawn: Callable[[], Any], actors: list[Any], pids: dict[Any, int]) -> None:
        self.ray, self.spawn, self.pids = ray, spawn, pids
        self.idle = list(actors)
        self.starting: dict[Any, Any] = {}  # pid() ref -> actor
        self.stalled_since: float | None = None

    def replace(self, dead: Any) -> int:
        """A worker died: start another in its place (without waiting); the dead one's pid."""
        pid = self.pids.pop(dead, 0)
        # "Unavailable" may be a node that comes back: it must not come back holding its CPUs.
        with contextlib.suppress(Exception):  # already gone
            self.ray.kill(dead, no_restart=True)
        actor = self.spawn()
        self.starting[actor.pid.remote()] = actor
        return pid

    def wait(self, running: Sequence[Any], timeout: float) -> list[Any]:
        ready, _ = self.ray.wait([*running, *self.starting], num_returns=1, timeout=timeout)
        done = []
        for ref in ready:
            actor = self.starting.pop(ref, None)
            if actor is None:
                done.append(ref)
                continue
            try:
                self.pids[actor] = self.ray.get(ref)
                self.idle.append(actor)
            except _lost(self.ray):
                pass  # it died starting: one worker fewer (``stalled`` says when none is left)
        return done

    def stalled(self, running: Sequence[Any]) -> bool:
        """Nothing running, no worker idle, and no replacement started within STALL_SECONDS (or none starting):
        the cluster has no room left for this job's workers."""
        if running or self.idle:
            self.stalled_since = None
            return False
        if not self.starting:
            return True
        now = time.perf_counter()
        self.stalled_since = self.stalled_since or now
        return now - self.stalled_since > STALL_SECONDS

    def close(self) -> None:
        for actor in [*self.pids, *self.starting.values()]:
            self.ray.kill(actor)


class _Worker:
    """A Ray actor's body: one session, opened once, then image after image."""

    def __init__(
        self,
        config: StyleConfig,
        model_bytes: bytes,
        styles: list[torch.Tensor],
        masks: list[torch.Tensor] | None,
        keep: torch.Tensor | None,
        shared: dict[Any, Any],
        threads: int,
        preset: str | None,
        opener: Opener,
        cache: tuple[bool, Path | None],
    ) -> None:
        self.threads = max(1, threads)
        self.pin_threads()
        folder = Path(tempfile.mkdtemp(prefix="nst-engine-worker-"))
        model = folder / "model.onnx"
        model.write_bytes(model_bytes)
        # The driver's kind of target source (cached or not), so the shared targets' keys are this one's keys.
        spec = ModelSpec(model=model, use_cache=cache[0], cache_dir=cache[1])
        # The driver's opener (a module-level function, sent by reference): this module opens no model itself.
        self.session = Session(config, styles, opener=opener, model=spec, masks=masks, content_mask=keep,
                               preset=preset)  # fmt: skip
        self.session.open()
        self.session.targets.preload(shared)

    def pid(self) -> int:
        return os.getpid()

    def pin_threads(self) -> None:
        """Set torch's threads in the thread that runs this call: OpenMP keeps its thread count per calling
        thread, and Ray may run an actor's calls on another thread than the one that built it."""
        torch.set_num_threads(self.threads)

    def stylize(self, content: torch.Tensor) -> tuple[str, Any, str, float]:
        start = time.perf_counter()
        self.pin_threads()
        try:
            done = self.session.stylize(content, None)
        except StyleTransferError as exc:
            return "failed", None, str(exc), time.perf_counter() - start
        image = None if done.image is None else done.image.numpy()
        return done.status, image, done.message, time.perf_counter() - start


class ClusterRunner:
    """Runs a batch of stylize jobs on Ray actors (see the module docstring)."""

    def __init__(
        self,
        session: Session,
        address: str | None,
        workers: int | None = None,
        on_event: Callable[[str], None] | None = None,
        on_dispatch: Callable[[Job, int], None] | None = None,
        on_progress: Callable[[ClusterProgress], None] | None = None,
    ) -> None:
        check_workers(workers)
        self.session, self.address, self.requested = session, address, workers
        self.say = on_event or (lambda _m: None)
        self.on_dispatch = on_dispatch
        self.on_progress = on_progress
        self.ray = require_ray()
        self.actor_start = 0.0

    def _start(self) -> tuple[int, int]:
        """Start or join Ray; (actors, CPUs each)."""
        ray = self.ray
        if not ray.is_initialized():
            if self.address is None:
                cpus = os.cpu_count() or 1
                if self.requested is not None and self.requested > cpus:
                    self.say(f"ray: {self.requested} workers asked for, but this machine has {cpus} CPUs: {cpus} start")
                # A cluster of this machine, its node on the loopback address, told the CPUs it has (never more:
                # Ray would start a process per CPU it is told of). Ray's servers still listen on every interface;
                # the token authentication Ray turns on for a local cluster guards them.
                ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                         _node_ip_address="127.0.0.1")  # fmt: skip
            else:
                self._join(self.address)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        count = max(1, min(self.requested or cpus, cpus))
        return count, max(1, cpus // count)

    def _join(self, address: str) -> None:
        """Join the cluster at ``address`` within JOIN_SECONDS, or a one-line error: a closed port is found by a
        plain connection first; a port that answers but is not Ray would leave ray.init waiting for ever."""
        ray = self.ray
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError as exc:
            raise ConfigError(
                f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start it with 'ray start --head "
                f"--port {port}', or check the address"
            ) from None
        if host in ("127.0.0.1", "localhost", "::1"):
            # Ray dials a loopback address by this machine's own IP: said, so that a firewall on it is findable.
            self.say(f"ray: Ray dials {address} as {ray.util.get_node_ip_address()}:{port}")
        joined: dict[str, BaseException | None] = {}

        def join() -> None:
            try:
                ray.init(address=address, log_to_driver=False)
                joined["error"] = None
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                joined["error"] = exc

        worker = threading.Thread(target=join, name="nst-engine-ray-join", daemon=True)
        worker.start()
        worker.join(JOIN_SECONDS)
        if "error" not in joined:
            raise ConfigError(
                f"no Ray cluster answered at {address} within {JOIN_SECONDS:g} s (the port is open, but not to Ray's "
                "head?); check the address, and that 'ray status' works there"
            )
        error = joined["error"]
        if isinstance(error, (ConnectionError, ray.exceptions.AuthenticationError)):
            why = str(error).splitlines()[0][:160]
            raise ConfigError(
                f"cannot join the Ray cluster at {address} ({why}); start it with 'ray start --head' "
                "and give this machine the cluster's token (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN=...)"
            ) from None
        if error is not None:
            raise error

    def _pool(self, kind: type, *extra: Any) -> _Pool:
        """Open the session, share what every worker needs (once), start the actors."""
        ray, session = self.ray, self.session
        session.open()
        session.pipeline.warm_styles()
        count, threads = self._start()
        model_ref = ray.put(session.model.info.path.read_bytes())
        style_ts, mask_ts, keep = session.inputs_loaded
        shared_ref = ray.put(session.targets.styles())
        styles_ref, masks_ref = ray.put(style_ts), ray.put(mask_ts)
        actor = ray.remote(num_cpus=threads, max_restarts=0, max_task_retries=0)(kind)
        arguments = (session.config, model_ref, styles_ref, masks_ref, keep, shared_ref, threads, session.preset,
                     session.opener)  # fmt: skip
        cache = (session.spec.use_cache, session.spec.cache_dir)

        def spawn() -> Any:
            return actor.remote(*arguments, cache, *extra)

        began = time.perf_counter()
        actors = [spawn() for _ in range(count)]
        pids = dict(zip(actors, ray.get([a.pid.remote() for a in actors]), strict=True))
        self.actor_start = time.perf_counter() - began
        self.say(f"ray: {count} workers, {threads} CPU each ({', '.join(f'pid {p}' for p in pids.values())}), "
                 f"started in {self.actor_start:.1f}s")  # fmt: skip
        return _Pool(ray, spawn, actors, pids)

    def _shape(self, job: Job) -> tuple[int, int]:
        """The size ``job``'s image is stylised at, from its file's header ((0, 0) when unknown)."""
        try:
            with open(job.content, "rb") as f:
                size = images.header_size(f.read(256 << 10))  # headers sit at the start
        except OSError:
            size = None
        if size is None:
            return (0, 0)
        return fit_long_side(size[1], size[0], self.session.config.size) if self.session.config.size else size

    def run(self, jobs: Sequence[Job], overwrite: bool = False) -> ClusterSummary:
        ray, session = self.ray, self.session
        start = time.perf_counter()
        check_writes(jobs, session.inputs, None, overwrite, 0, None)
        summary = ClusterSummary()
        todo, skipped = session.sort_existing(jobs, overwrite, None)
        for job, why in skipped.items():
            summary.results.append(ClusterResult(str(job.content), job.output, "skipped", message=why))
        if not todo:
            return summary
        # Images of one size together, and a worker kept on its last size while there is more of it: on a GPU
        # each new size costs a worker its convolution autotuning (cudnn.benchmark) once.
        shapes = {job: self._shape(job) for job in todo}
        queue = sorted(todo, key=lambda j: shapes[j])
        pool = self._pool(_Worker)
        summary.workers, summary.actor_start = len(pool.idle), self.actor_start
        retries: dict[Job, int] = {}
        running: dict[Any, tuple[Job, Any, float]] = {}  # task ref -> (job, actor, when it was sent)
        last: dict[Any, tuple[int, int]] = {}  # actor -> the size of its last image
        began = time.perf_counter()

        def progress() -> None:
            if self.on_progress is None:
                return
            on = {pool.pids[w]: Path(j.content).name for j, w, _ in running.values() if w in pool.pids}
            done = summary.count("done")
            minutes = (time.perf_counter() - began) / 60
            status = {pid: on.get(pid, "idle") for pid in pool.pids.values()}
            self.on_progress(ClusterProgress(len(jobs), done, summary.count("failed"), summary.count("skipped"),
                                             summary.retried, done / minutes if minutes else 0.0, status))  # fmt: skip

        def fail(job: Job, why: str) -> None:
            summary.results.append(ClusterResult(str(job.content), job.output, "failed", message=why))
            self.say(f"failed {job.content}: {why}")

        try:
            while queue or running:
                while queue and pool.idle:
                    worker = pool.idle.pop(0)
                    mine = last.get(worker)
                    job = queue[0] if mine is None else next((j for j in queue if shapes[j] == mine), queue[0])
                    queue.remove(job)
                    try:
                        content = images.load(job.content, session.config.size, session.config.max_input_pixels)
                    except StyleTransferError as exc:
                        pool.idle.insert(0, worker)
                        fail(job, str(exc))
                        continue
                    last[worker] = shapes[job]
                    running[worker.stylize.remote(content)] = (job, worker, time.perf_counter())
                    if self.on_dispatch is not None:
                        self.on_dispatch(job, pool.pids[worker])
                    progress()
                if not running and not queue:
                    break
                if pool.stalled(list(running)):
                    for job in queue:
                        fail(job, "no worker is left on the cluster (its nodes were lost); rerun to continue")
                    queue.clear()
                    break
                ready = pool.wait(list(running), timeout=0.5)
                if session.stop_requested:
                    summary.interrupted = True
                    break
                for ref in ready:
                    job, worker, sent = running.pop(ref)
                    try:
                        status, image, message, seconds = ray.get(ref)
                    except _lost(ray) as exc:
                        retries[job] = retries.get(job, 0) + 1
                        summary.retried += 1
                        dead = pool.replace(worker)
                        if retries[job] > MAX_RETRIES:
                            fail(job, f"its worker died {retries[job]} times")
                        else:
                            queue.insert(0, job)
                            self.say(f"worker pid {dead} died ({type(exc).__name__}); {job.content} is retried")
                        progress()
                        continue
                    pool.idle.append(worker)
                    result = ClusterResult(str(job.content), job.output, status, seconds, message,
                                           retries.get(job, 0), pool.pids.get(worker, 0),
                                           time.perf_counter() - sent - seconds)  # fmt: skip
                    if status == "done" and image is not None:
                        session.save(torch.from_numpy(np.array(image)), job.output, job.content)
                        self.say(f"done {job.output} on pid {result.worker} in {seconds:.1f}s")
                    else:
                        self.say(f"failed {job.content}: {message}")
                    summary.results.append(result)
                    progress()
        finally:
            pool.close()  # killing the actors ends their tasks (Ray cannot force-cancel an actor's task)
        summary.seconds = time.perf_counter() - start
        return summary

    def shutdown(self) -> None:
        if self.address is None and self.ray.is_initialized():
            self.ray.shutdown()


# -- video on the cluster -------------------------------------------------------------------------------------

#: A scene cut: consecutive content frames whose mean absolute difference is over this (pixels in [0, 255]).
CUT_THRESHOLD = 40.0


def chunks_of(frames: Sequence[np.ndarray], length: int) -> list[tuple[int, int]]:
    """(start, end) of each chunk: a new chunk at every scene cut, and after ``length`` frames at the most."""
    if length < 2:
        raise ConfigError(f"--chunk-frames must be 2 or more, not {length}")
    cuts = [
        t
        for t in range(1, len(frames))
        if float(np.abs(frames[t].astype(np.float32) - frames[t - 1].astype(np.float32)).mean()) > CUT_THRESHOLD
    ]
    out, start = [], 0
    for t in range(1, len(frames) + 1):
        if t == len(frames) or t in cuts or t - start == length:
            out.append((start, t))
            start = t
    return out


class _VideoWorker(_Worker):
    """A worker for clips: its session and a video runner with no frames on disk (``VideoRun.chunk``)."""

    def __init__(self, *args: Any) -> None:
        *base, settings = args
        super().__init__(*base)
        self.video = VideoRun(self.session, settings, FlowCache(None), lambda _done: None)

    def chunk(self, frames: list[np.ndarray]) -> list[bytes] | None:
        self.pin_threads()
        return self.video.chunk(frames)


@dataclass
class ClusterVideoResult:
    status: str
    frames: int
    chunks: int
    made_chunks: int
    retried: int
    seconds: float
    join_error: float | None  # warping error across chunk joins
    within_error: float | None  # and between frames of one chunk


def run_video(runner: ClusterRunner, clip: Any, output: Path, source: str, settings: Any,
              chunk_frames: int, overwrite: bool = False) -> ClusterVideoResult:  # fmt: skip
    """A clip on the cluster: chunks (at scene cuts, else ``chunk_frames`` long) in order on workers, each
    starting one frame early from that frame's independent stylisation, which is not kept (the chunk before
    made it). Frames are written by the driver, atomically; a rerun redoes only chunks with frames missing."""
    ray, session = runner.ray, runner.session
    start = time.perf_counter()
    chunks = chunks_of(clip.frames, chunk_frames)
    local = VideoRun(session, settings, FlowCache(None), lambda _done: None)
    prepared = local.check(clip, output, source, overwrite, chunks)
    folder, stale = prepared.folder, set(prepared.stale)
    done = {t for t in range(len(clip)) if (folder / frame_name(t)).is_file() and folder / frame_name(t) not in stale}
    todo = [c for c in chunks if not all(t in done for t in range(*c))]
    result = ClusterVideoResult("done", len(clip), len(chunks), 0, 0, 0.0, None, None)
    if not todo:
        prepared.start()
    else:
        pool = runner._pool(_VideoWorker, settings)
        prepared.start()  # the workers are up: the run can start, and only now is anything written
        queue = list(todo)
        running: dict[Any, tuple[tuple[int, int], Any]] = {}
        tries: dict[tuple[int, int], int] = {}
        try:
            while queue or running:
                while queue and pool.idle:
                    first, end = queue.pop(0)
                    worker = pool.idle.pop(0)
                    lead = max(0, first - 1)  # one frame early: the join's reference, stylised independently
                    running[worker.chunk.remote(clip.frames[lead:end])] = ((first, end), worker)
                if pool.stalled(list(running)):
                    raise ConfigError("no worker is left on the cluster (its nodes were lost); rerun to continue")
                ready = pool.wait(list(running), timeout=0.5)
                if session.stop_requested:
                    result.status = "interrupted"
                    break
                for ref in ready:
                    span, worker = running.pop(ref)
                    try:
                        pngs = ray.get(ref)
                    except _lost(ray):
                        tries[span] = tries.get(span, 0) + 1
                        result.retried += 1
                        if tries[span] > MAX_RETRIES:
                            why = f"frames {span[0] + 1}-{span[1]}: a worker died {tries[span]} times"
                            raise ConfigError(why) from None
                        runner.say(f"worker pid {pool.replace(worker)} died; frames {span[0] + 1}-{span[1]} retried")
                        queue.insert(0, span)
                        continue
                    pool.idle.append(worker)
                    if pngs is None:
                        result.status = "interrupted"
                        continue
                    first, end = span
                    kept = pngs[1:] if first > 0 else pngs
                    for t, data in zip(range(first, end), kept, strict=True):
                        write_atomic(folder / frame_name(t), data)
                    result.made_chunks += 1
                    runner.say(f"frames {first + 1}-{end} of {len(clip)} written (pid {pool.pids.get(worker, 0)})")
        finally:
            pool.close()  # killing the actors ends their tasks (Ray cannot force-cancel an actor's task)
    if result.status != "done":
        result.seconds = time.perf_counter() - start
        return result
    outputs = [images.read_image(folder / frame_name(t)) for t in range(len(clip))]
    flows = FlowCache(None)
    joins = {first for first, _ in chunks if first > 0}
    errors: dict[bool, list[float]] = {True: [], False: []}
    for t in range(1, len(clip)):
        forward, backward = flows.pair(clip.frames[t - 1], clip.frames[t])
        sure = certainty(forward, backward, blur=False) > 0.5
        if sure.any():
            diff = np.abs(outputs[t] - warp(outputs[t - 1], backward)).mean(axis=-1)
            errors[t in joins].append(float(diff[sure].mean()))
    result.join_error = float(np.mean(errors[True])) if errors[True] else None
    result.within_error = float(np.mean(errors[False])) if errors[False] else None
    local.finish(clip, folder, output)
    result.seconds = time.perf_counter() - start
    return result
