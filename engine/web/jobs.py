"""The web page's jobs: one runs at a time on the device, the others wait in a bounded queue.

A job lives in the server, not in the page: closing the page leaves it running, and a page opened later gets
its state, its loss curve so far and its latest preview. Everything a job shows is published to a ``Hub``, which
hands it to the event streams of the pages that are open (engine.web.app).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from nst_engine import images
from nst_engine.api import Session
from nst_engine.config import StyleConfig
from nst_engine.errors import StyleTransferError
from nst_engine.events import Event, Note, StepDone
from nst_engine.files import write_atomic
from nst_engine.plan import ScalePlan
from nst_engine.spec import ModelSpec

log = logging.getLogger("nst-engine.serve")

State = Literal["queued", "running", "done", "stopped", "failed", "cancelled"]
ACTIVE = ("queued", "running")


class QueueFull(Exception):
    """More jobs are waiting than the server takes (``serve --max-queued``)."""


@dataclass
class WebJob:
    """One run asked for by a page: its settings, its state, and what it has shown so far."""

    id: str
    config: StyleConfig
    content: Path
    styles: tuple[Path, ...]  # one painting, or two blended (or placed by ``region``)
    shown: dict[str, Any]  # the settings as the page sent them, plus the inputs' names, for the job list
    preset: str | None = None
    region: Path | None = None  # with two styles: white where the second goes, black where the first
    keep: Path | None = None  # white where the photo is kept unstylized
    state: State = "queued"
    created: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    step: int = 0
    total: int = 0
    losses: list[float] = field(default_factory=list)
    preview: dict[str, Any] | None = None  # the latest "preview" event
    result: Path | None = None  # the PNG, in the server's results folder (never held in memory)
    trace: Path | None = None  # its trace, beside it
    message: str = ""
    session: Session | None = None
    stop_asked: str = ""  # a stop asked for before its session existed is passed on when it does

    def summary(self, position: int | None) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "position": position,  # 1 for the next to run, None when not queued
            "step": self.step,
            "total": self.total,
            "loss": self.losses[-1] if self.losses else None,
            "best": min(self.losses) if self.losses else None,
            "seconds": None if self.started is None else (self.ended or time.time()) - self.started,
            "message": self.message,
            "settings": self.shown,
            "has_result": self.result is not None,
        }


def total_steps(config: StyleConfig) -> int:
    """Steps over every scale of a run."""
    return ScalePlan.of(config).total_steps


class Hub:
    """Fans events out from the job thread to every open page's stream (an asyncio queue on the server's loop).
    A page that cannot keep up loses previews, never state changes."""

    LIMIT = 256

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[dict[str, Any]]]] = []

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self.LIMIT)
        with self._lock:
            self._subscribers.append((asyncio.get_running_loop(), queue))
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        with self._lock:
            self._subscribers = [(lp, q) for lp, q in self._subscribers if q is not queue]

    @property
    def watchers(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def publish(self, event: dict[str, Any]) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for loop, queue in subscribers:
            try:
                loop.call_soon_threadsafe(_offer, queue, event)
            except RuntimeError:  # that page's loop has closed
                self.unsubscribe(queue)


def _offer(queue: asyncio.Queue[dict[str, Any]], event: dict[str, Any]) -> None:
    if event["type"] == "preview" and queue.qsize() > queue.maxsize // 2:
        return  # a slow page: skip previews, keep room for what it must not miss
    with contextlib.suppress(asyncio.QueueFull):
        queue.put_nowait(event)


class JobQueue:
    """Runs jobs one at a time on a thread of its own, in the order they came.

    The server's memory stays bounded however long it runs: results and traces go to files in ``folder``, and
    at most ``max_history`` finished jobs are kept (the oldest is dropped, files and all, with a note to the
    pages). Pages are sent only what changed: one job's summary, or the id of a job dropped."""

    def __init__(self, spec: ModelSpec, hub: Hub, folder: Path, max_queued: int = 8, preview_every: float = 0.2,
                 max_history: int = 32):  # fmt: skip
        self.spec, self.hub, self.folder = spec, hub, folder
        folder.mkdir(parents=True, exist_ok=True)
        self.max_queued, self.preview_every, self.max_history = max_queued, preview_every, max_history
        self.jobs: dict[str, WebJob] = {}  # every job kept, in the order submitted
        self._lock = threading.Condition()
        self._closing = False
        self._current: WebJob | None = None
        self._thread = threading.Thread(target=self._work, name="nst-engine-jobs", daemon=True)
        self._thread.start()

    # -- what the page asks ---------------------------------------------------------------------------------------

    def submit(self, config: StyleConfig, content: Path, styles: Path | Sequence[Path], shown: dict[str, Any],
               preset: str | None, region: Path | None = None, keep: Path | None = None) -> WebJob:  # fmt: skip
        with self._lock:
            if self._closing:
                raise QueueFull("the server is shutting down")
            if len(self._waiting()) >= self.max_queued:
                raise QueueFull(f"{self.max_queued} jobs are already waiting; stop one or wait for the queue to move")
            paintings = (styles,) if isinstance(styles, Path) else tuple(styles)
            job = WebJob(secrets.token_hex(6), config, content, paintings, shown, preset, region, keep,
                         total=total_steps(config))  # fmt: skip
            self.jobs[job.id] = job
            self._lock.notify_all()
        self._changed(job)
        return job

    def stop(self, job_id: str) -> WebJob | None:
        """Cancel this waiting job, or stop this running one after its current step (its image so far is kept).
        Only the job named is touched; a finished job is left as it is."""
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None:
                return None
            if job.state == "queued":
                job.state, job.ended, job.message = "cancelled", time.time(), "cancelled before it started"
            elif job.state == "running":
                job.stop_asked = job.stop_asked or "stopped from the page"
                if job.session is not None:
                    job.session.stop(job.stop_asked)
            else:
                return job
        self._changed(job, moved=True)
        self._trim()
        return job

    def delete(self, job_id: str) -> bool:
        """Forget a finished job and delete its files; False if it is still queued or running."""
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None or job.state in ACTIVE:
                return False
            del self.jobs[job_id]
        _remove_files(job)
        self.hub.publish({"type": "dropped", "id": job_id, "why": "deleted"})
        return True

    def position(self, job: WebJob) -> int | None:
        waiting = self._waiting()
        return waiting.index(job) + 1 if job in waiting else None

    def summaries(self) -> list[dict[str, Any]]:
        with self._lock:
            return [job.summary(self.position(job)) for job in self.jobs.values()]

    def uses(self, path: Path) -> bool:
        """Whether a job that has not finished reads ``path`` (an upload must not be deleted under it)."""
        with self._lock:
            return any(
                j.state in ("queued", "running") and path in (j.content, *j.styles, j.region, j.keep)
                for j in self.jobs.values()
            )

    def close(self, timeout: float = 60.0) -> None:
        """Cancel what waits, stop the running job at a step boundary, and wait for it to end."""
        self.begin_close()
        self._thread.join(timeout)

    def begin_close(self) -> None:
        """``close`` without the wait."""
        with self._lock:
            self._closing = True
            cancelled = self._waiting()
            for job in cancelled:
                job.state, job.ended, job.message = "cancelled", time.time(), "the server shut down"
            if self._current is not None:
                self._current.stop_asked = "the server is shutting down"
                if self._current.session is not None:
                    self._current.session.stop(self._current.stop_asked)
            self._lock.notify_all()
        for job in cancelled:
            self._changed(job)

    # -- the job thread -------------------------------------------------------------------------------------------

    def _waiting(self) -> list[WebJob]:
        return [j for j in self.jobs.values() if j.state == "queued"]

    def _changed(self, job: WebJob, moved: bool = False) -> None:
        """Tell the pages about ``job``; with ``moved``, the waiting jobs too (their positions changed)."""
        with self._lock:
            changed = [job, *(j for j in self._waiting() if j is not job)] if moved else [job]
            summaries = [j.summary(self.position(j)) for j in changed]
        for summary in summaries:
            self.hub.publish({"type": "job", "job": summary})

    def _trim(self) -> None:
        """Drop the oldest finished jobs over ``max_history``, with their files."""
        with self._lock:
            finished = [j for j in self.jobs.values() if j.state not in ACTIVE]
            dropped = finished[: max(0, len(finished) - self.max_history)]
            for job in dropped:
                del self.jobs[job.id]
        for job in dropped:
            _remove_files(job)
            why = f"the server keeps the last {self.max_history} finished jobs"
            self.hub.publish({"type": "dropped", "id": job.id, "why": why})

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._closing and not self._waiting():
                    self._lock.wait()
                if self._closing:
                    return
                job = self._waiting()[0]
                job.state, job.started = "running", time.time()
                self._current = job
            self._changed(job, moved=True)
            try:
                self._run(job)
            except StyleTransferError as exc:
                job.state, job.message = "failed", str(exc)
            except Exception as exc:
                log.exception("job %s failed", job.id)
                job.state, job.message = "failed", f"internal error: {type(exc).__name__}: {exc}"
            finally:
                with self._lock:
                    job.ended, job.session, self._current = time.time(), None, None
                self._changed(job)
                self._trim()

    def _run(self, job: WebJob) -> None:
        latest: dict[str, float] = {}

        def on_event(event: Event) -> None:
            if isinstance(event, StepDone):
                latest.update(event.step.losses)
            elif isinstance(event, Note):  # an export for a preset's pooling, a cache warning
                self.hub.publish({"type": "note", "id": job.id, "text": event.text, "level": event.level})

        # The server's model, or one exported from its weights into the cache for this job's layers and pooling
        # (once: the next job with them finds it there).
        session = Session(job.config, list(job.styles), model=self.spec, masks=_regions(job),
                          content_mask=job.keep, on_event=on_event, preset=job.preset)  # fmt: skip
        with self._lock:
            job.session = session
            if job.stop_asked:
                session.stop(job.stop_asked)
        last = [0.0]

        def on_image(step: int, image: Callable[[], torch.Tensor]) -> None:
            now = time.time()  # the step has just finished: the page's latency is measured from here
            loss = latest.get("total")
            job.step = step
            if loss is not None:
                job.losses.append(loss)
            self.hub.publish({"type": "step", "id": job.id, "step": step, "total": job.total, "loss": loss,
                              "t": now})  # fmt: skip
            if now - last[0] >= self.preview_every and self.hub.watchers:
                last[0] = now
                self._preview(job, step, image(), now)

        done = session.stylize(job.content, None, on_image=on_image)
        assert done.image is not None
        result, trace = self.folder / f"{job.id}.png", self.folder / f"{job.id}.json"
        write_atomic(result, images.encode_png(done.image))
        write_atomic(trace, json.dumps(session.trace_data([done], batch=False), indent=2).encode())
        job.result, job.trace = result, trace
        job.step = len(done.steps)
        self._preview(job, job.step, done.image, time.time())
        if done.status == "interrupted":
            job.state, job.message = "stopped", session.stop_reason or "stopped"
        else:
            job.state = "done"

    def _preview(self, job: WebJob, step: int, image: torch.Tensor, when: float) -> None:
        data = base64.b64encode(images.encode_jpeg(image.detach().float().cpu().clamp(0, 1))).decode()
        height, width = int(image.shape[-2]), int(image.shape[-1])
        job.preview = {"type": "preview", "id": job.id, "step": step, "t": when, "width": width, "height": height,
                       "image": f"data:image/jpeg;base64,{data}"}  # fmt: skip
        self.hub.publish(job.preview)


def _regions(job: WebJob) -> list[torch.Tensor] | None:
    """The two styles' masks from the page's one region mask: the first style where it is black, the second
    where it is white (soft edges share)."""
    if job.region is None:
        return None
    white = images.load(job.region, None, job.config.max_input_pixels).mean(dim=1, keepdim=True)
    return [1.0 - white, white]


def _remove_files(job: WebJob) -> None:
    for path in (job.result, job.trace):
        if path is not None:
            path.unlink(missing_ok=True)
