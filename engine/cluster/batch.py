"""A batch of images on the cluster: ``ClusterRunner.run``. Images of one size go together, and a worker is kept on
its last size while there is more of it: on a GPU each new size costs a worker its convolution autotuning
(cudnn.benchmark) once."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nst_engine import images
from nst_engine.cluster.connect import check_workers, connect, require_ray
from nst_engine.cluster.pool import Pool, retry_or_give_up
from nst_engine.cluster.workers import Worker
from nst_engine.errors import StyleTransferError
from nst_engine.jobs import Job, check_writes
from nst_engine.resize import fit_long_side
from nst_engine.session import Session


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


class ClusterRunner:
    """Runs a batch of stylize jobs (``run``), or a clip's chunks (``engine.cluster.video``), on Ray actors."""

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

    def open_pool(self, kind: type[Worker], **extra: Any) -> Pool[Any]:
        """Open the session, share what every worker needs (once), start the actors (``kind``, given ``extra``)."""
        ray, session = self.ray, self.session
        session.open()
        session.pipeline.warm_styles()
        count, threads = connect(ray, self.address, self.requested, self.say)
        model_ref = ray.put(session.model.info.path.read_bytes())
        style_ts, mask_ts, keep = session.inputs_loaded
        shared_ref = ray.put(session.targets.styles())
        styles_ref, masks_ref = ray.put(style_ts), ray.put(mask_ts)
        actor = ray.remote(num_cpus=threads, max_restarts=0, max_task_retries=0)(kind)
        arguments = (session.config, model_ref, styles_ref, masks_ref, keep, shared_ref, threads, session.preset,
                     session.opener, (session.spec.use_cache, session.spec.cache_dir))  # fmt: skip

        def spawn() -> Any:
            return actor.remote(*arguments, **extra)

        began = time.perf_counter()
        actors = [spawn() for _ in range(count)]
        pids = dict(zip(actors, ray.get([a.pid.remote() for a in actors]), strict=True))
        self.actor_start = time.perf_counter() - began
        self.say(f"ray: {count} workers, {threads} CPU each ({', '.join(f'pid {p}' for p in pids.values())}), "
                 f"started in {self.actor_start:.1f}s")  # fmt: skip
        return Pool(ray, spawn, actors, pids)

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
        session = self.session
        start = time.perf_counter()
        check_writes(jobs, session.inputs, None, overwrite, 0, None)
        summary = ClusterSummary()
        todo, skipped = session.sort_existing(jobs, overwrite, None)
        for job, why in skipped.items():
            summary.results.append(ClusterResult(str(job.content), job.output, "skipped", message=why))
        if todo:
            shapes = {job: self._shape(job) for job in todo}
            pool = self.open_pool(Worker)
            summary.workers, summary.actor_start = len(pool.idle), self.actor_start
            batch = _Batch(self, pool, summary, shapes, len(jobs))
            queue = sorted(todo, key=lambda j: shapes[j])
            summary.interrupted = pool.work(queue, batch, lambda: session.stop_requested, batch.pick)
        summary.seconds = time.perf_counter() - start
        return summary

    def shutdown(self) -> None:
        if self.address is None and self.ray.is_initialized():
            self.ray.shutdown()


class _Batch:
    """What a batch does with each image (``engine.cluster.pool.Tasks``): read and send it, save the result,
    retry it when its worker dies, and tell the listener how the batch stands."""

    def __init__(self, runner: ClusterRunner, pool: Pool[Job], summary: ClusterSummary,
                 shapes: dict[Job, tuple[int, int]], total: int) -> None:  # fmt: skip
        self.runner, self.pool, self.summary, self.shapes, self.total = runner, pool, summary, shapes, total
        self.last: dict[Any, tuple[int, int]] = {}  # actor -> the size of its last image
        self.tries: dict[Job, int] = {}
        self.began = time.perf_counter()

    def pick(self, actor: Any, queue: list[Job]) -> Job:
        """The actor's next image: one of the size it did last, while there is one."""
        mine = self.last.get(actor)
        return queue[0] if mine is None else next((j for j in queue if self.shapes[j] == mine), queue[0])

    def send(self, actor: Any, job: Job) -> Any | None:
        config = self.runner.session.config
        try:
            content = images.load(job.content, config.size, config.max_input_pixels)
        except StyleTransferError as exc:
            self._fail(job, str(exc))
            return None
        self.last[actor] = self.shapes[job]
        return actor.stylize.remote(content)

    def started(self, job: Job, actor: Any) -> None:
        if self.runner.on_dispatch is not None:
            self.runner.on_dispatch(job, self.pool.pids[actor])
        self._progress()

    def done(self, job: Job, actor: Any, value: Any, sent: float) -> None:
        status, image, message, seconds = value
        result = ClusterResult(str(job.content), job.output, status, seconds, message, self.tries.get(job, 0),
                               self.pool.pids.get(actor, 0), time.perf_counter() - sent - seconds)  # fmt: skip
        if status == "done" and image is not None:
            self.runner.session.save(torch.from_numpy(np.array(image)), job.output, job.content)
            self.runner.say(f"done {job.output} on pid {result.worker} in {seconds:.1f}s")
        else:
            self.runner.say(f"failed {job.content}: {message}")
        self.summary.results.append(result)
        self._progress()

    def lost(self, job: Job, dead: int, error: BaseException) -> bool:
        self.summary.retried += 1
        again = retry_or_give_up(self.tries, job)
        if again:
            self.runner.say(f"worker pid {dead} died ({type(error).__name__}); {job.content} is retried")
        else:
            self._fail(job, f"its worker died {self.tries[job]} times")
        self._progress()
        return again

    def stalled(self, left: list[Job]) -> None:
        for job in left:
            self._fail(job, "no worker is left on the cluster (its nodes were lost); rerun to continue")

    def _fail(self, job: Job, why: str) -> None:
        self.summary.results.append(ClusterResult(str(job.content), job.output, "failed", message=why))
        self.runner.say(f"failed {job.content}: {why}")

    def _progress(self) -> None:
        if self.runner.on_progress is None:
            return
        summary, pool = self.summary, self.pool
        on = {pid: Path(job.content).name for pid, job in pool.busy().items()}
        done = summary.count("done")
        minutes = (time.perf_counter() - self.began) / 60
        status = {pid: on.get(pid, "idle") for pid in pool.pids.values()}
        rate = done / minutes if minutes else 0.0
        failed, skipped = summary.count("failed"), summary.count("skipped")
        self.runner.on_progress(ClusterProgress(self.total, done, failed, skipped, summary.retried, rate, status))
