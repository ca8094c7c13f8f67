"""A clip on the cluster: chunks (at scene cuts, else ``--chunk-frames`` long) in order on workers, each starting one
frame early from that frame's independent stylisation, which is not kept (the chunk before made it). Frames are
written by the driver, atomically; a rerun redoes only chunks with frames missing."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nst_engine import images
from nst_engine.cluster.batch import ClusterRunner
from nst_engine.cluster.pool import Pool, retry_or_give_up
from nst_engine.cluster.workers import VideoWorker
from nst_engine.errors import ConfigError
from nst_engine.files import write_atomic
from nst_engine.flow import FlowCache, pair_warping_errors
from nst_engine.video import VideoRun
from nst_engine.video_io import Clip, frame_name
from nst_engine.video_settings import VideoSettings

#: A scene cut: consecutive content frames whose mean absolute difference is over this (pixels in [0, 255]).
CUT_THRESHOLD = 40.0
Span = tuple[int, int]


def chunks_of(frames: Sequence[np.ndarray], length: int) -> list[Span]:
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


def run_video(runner: ClusterRunner, clip: Clip, output: Path, source: str, settings: VideoSettings,
              overwrite: bool = False) -> ClusterVideoResult:  # fmt: skip
    """The clip in chunks on the cluster (see the module docstring), then its warping error at the joins and within
    chunks, and the video encoded."""
    start = time.perf_counter()
    chunks = chunks_of(clip.frames, settings.chunk_frames)
    local = VideoRun(runner.session, settings, FlowCache(None), lambda _done: None)
    prepared = local.check(clip, output, source, overwrite, chunks)
    folder, stale = prepared.folder, set(prepared.stale)
    done = {t for t in range(len(clip)) if (folder / frame_name(t)).is_file() and folder / frame_name(t) not in stale}
    todo = [c for c in chunks if not all(t in done for t in range(*c))]
    result = ClusterVideoResult("done", len(clip), len(chunks), 0, 0, 0.0, None, None)
    if todo:
        pool = runner.open_pool(VideoWorker, settings=settings)
        prepared.start()  # the workers are up: the run can start, and only now is anything written
        if pool.work(list(todo), _Chunks(runner, pool, clip, folder, result), lambda: runner.session.stop_requested):
            result.status = "interrupted"
    else:
        prepared.start()
    if result.status == "done":
        outputs = [images.read_image(folder / frame_name(t)) for t in range(len(clip))]
        errors = pair_warping_errors(outputs, clip.frames, FlowCache(None))
        joins = {first for first, _ in chunks if first > 0}
        at_joins = [e for t, e in errors.items() if t in joins]
        within = [e for t, e in errors.items() if t not in joins]
        result.join_error = float(np.mean(at_joins)) if at_joins else None
        result.within_error = float(np.mean(within)) if within else None
        local.finish(clip, folder, output)
    result.seconds = time.perf_counter() - start
    return result


class _Chunks:
    """What a clip does with each chunk (``engine.cluster.pool.Tasks``): send its frames (one early), write the
    frames that come back, retry it when its worker dies."""

    def __init__(self, runner: ClusterRunner, pool: Pool[Span], clip: Clip, folder: Path,
                 result: ClusterVideoResult) -> None:  # fmt: skip
        self.runner, self.pool, self.clip, self.folder, self.result = runner, pool, clip, folder, result
        self.tries: dict[Span, int] = {}

    def send(self, actor: Any, span: Span) -> Any:
        first, end = span
        lead = max(0, first - 1)  # one frame early: the join's reference, stylised independently
        return actor.chunk.remote(self.clip.frames[lead:end])

    def started(self, span: Span, actor: Any) -> None:
        pass

    def done(self, span: Span, actor: Any, pngs: Any, sent: float) -> None:
        if pngs is None:  # the worker's session was asked to stop
            self.result.status = "interrupted"
            return
        first, end = span
        kept = pngs[1:] if first > 0 else pngs
        for t, data in zip(range(first, end), kept, strict=True):
            write_atomic(self.folder / frame_name(t), data)
        self.result.made_chunks += 1
        worker = self.pool.pids.get(actor, 0)
        self.runner.say(f"frames {first + 1}-{end} of {len(self.clip)} written (pid {worker})")

    def lost(self, span: Span, dead: int, error: BaseException) -> bool:
        self.result.retried += 1
        if not retry_or_give_up(self.tries, span):
            raise ConfigError(f"frames {span[0] + 1}-{span[1]}: a worker died {self.tries[span]} times") from None
        self.runner.say(f"worker pid {dead} died; frames {span[0] + 1}-{span[1]} retried")
        return True

    def stalled(self, left: list[Span]) -> None:
        raise ConfigError("no worker is left on the cluster (its nodes were lost); rerun to continue")
