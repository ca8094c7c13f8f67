"""A clip on the cluster, in two passes. A clip is cut into chunks at scene cuts and after ``--chunk-frames``; each
chunk's first frame is its key.

- Pass one makes each scene's keys in order on one worker, as a clip of their own: the scene's first key is a normal
  run, each later key is held by the temporal loss to the keys before it, warped along the flow between them.
- Pass two makes every chunk's other frames, on the workers in parallel, going on from its key and drawn toward the
  next chunk's key a step at a time (``flow.Ahead``), so that the last frame arrives at it; a scene's chunks start
  as soon as its keys are made (one pool, one queue: the actors are kept).

So a chunk starts where its scene's chain of keys carried the texture and ends where the next chunk starts: what
differs between two keys is spread over the chunk between them instead of jumping at the join, and only a scene's
first frame is a full run. Frames are written
by the driver, atomically; a rerun makes only what is missing (a scene's keys from its first missing one on, from the
key before it on disk)."""

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


def scene_cuts(frames: Sequence[np.ndarray]) -> set[int]:
    """The frames that start a new scene: their mean absolute difference from the frame before is over
    ``CUT_THRESHOLD`` (pixels in [0, 255])."""
    return {
        t
        for t in range(1, len(frames))
        if float(np.abs(frames[t].astype(np.float32) - frames[t - 1].astype(np.float32)).mean()) > CUT_THRESHOLD
    }


def chunks_of(frames: Sequence[np.ndarray], length: int, cuts: set[int] | None = None) -> list[Span]:
    """(start, end) of each chunk: a new chunk at every scene cut (``scene_cuts``, or ``cuts`` when the caller
    has them), and after ``length`` frames at the most."""
    if length < 2:
        raise ConfigError(f"--chunk-frames must be 2 or more, not {length}")
    cuts = scene_cuts(frames) if cuts is None else cuts
    out, start = [], 0
    for t in range(1, len(frames) + 1):
        if t == len(frames) or t in cuts or t - start == length:
            out.append((start, t))
            start = t
    return out


@dataclass(frozen=True)
class Piece:
    """Frames of the clip made in order on one worker (clip indices); the first ``given`` are read from disk and
    the run goes on from them."""

    frames: tuple[int, ...]
    given: int = 0
    keys: bool = False  # pass one's: a scene's keys, not one chunk's frames
    ahead: int | None = None  # pass two's: the next chunk's key in the scene, which the frames are drawn toward

    @property
    def made(self) -> tuple[int, ...]:
        return self.frames[self.given :]


def scenes_of(spans: Sequence[Span], cuts: set[int]) -> list[list[Span]]:
    """The chunks of each scene, in order: a scene starts at the clip's start and at each cut."""
    scenes: list[list[Span]] = []
    for span in spans:
        if span[0] == 0 or span[0] in cuts:
            scenes.append([])
        scenes[-1].append(span)
    return scenes


def _keys(scene: Sequence[Span], done: set[int]) -> Piece | None:
    keys = [first for first, _ in scene]
    missing = [i for i, k in enumerate(keys) if k not in done]
    return Piece(tuple(keys), missing[0], keys=True) if missing else None


def chunk_pieces(scene: Sequence[Span], done: set[int]) -> list[Piece]:
    """Pass two: each of one scene's chunks' frames after its key, going on from the key and drawn toward the next
    chunk's key (``ahead``; none for the scene's last chunk), where one of them is not on disk."""
    aheads = [first for first, _ in scene[1:]] + [None]
    return [Piece(tuple(range(first, end)), 1, ahead=ahead) for (first, end), ahead in zip(scene, aheads, strict=True)
            if any(t not in done for t in range(first + 1, end))]  # fmt: skip


def plan_pieces(spans: Sequence[Span], cuts: set[int], done: set[int]) -> tuple[list[Piece], dict[Piece, list[Piece]]]:
    """What to make first (each scene's missing keys, and the chunks of scenes whose keys are all on disk), and the
    chunks each keys piece lets start once it is made: a scene's chunks need not wait for another scene's keys."""
    first: list[Piece] = []
    after: dict[Piece, list[Piece]] = {}
    for scene in scenes_of(spans, cuts):
        keys, chunks = _keys(scene, done), chunk_pieces(scene, done)
        if keys is None:
            first += chunks
        else:
            first.append(keys)
            after[keys] = chunks
    return first, after


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
    keys: int = 0  # keys made in pass one


def run_video(runner: ClusterRunner, clip: Clip, output: Path, source: str, settings: VideoSettings,
              overwrite: bool = False) -> ClusterVideoResult:  # fmt: skip
    """The clip in two passes on the cluster (see the module docstring), then its warping error at the joins and
    within chunks, and the video encoded."""
    start = time.perf_counter()
    cuts = scene_cuts(clip.frames)
    spans = chunks_of(clip.frames, settings.chunk_frames, cuts)
    local = VideoRun(runner.session, settings, FlowCache(None), lambda _done: None)
    prepared = local.check(clip, output, source, overwrite, spans)
    folder, stale = prepared.folder, set(prepared.stale)
    done = {t for t in range(len(clip)) if (folder / frame_name(t)).is_file() and folder / frame_name(t) not in stale}
    result = ClusterVideoResult("done", len(clip), len(spans), 0, 0, 0.0, None, None)
    queue, after = plan_pieces(spans, cuts, done)
    if queue:
        pool = runner.open_pool(VideoWorker, settings=settings)
        prepared.start()  # the workers are up: the run can start, and only now is anything written
        if after:
            runner.say(f"keys first: {sum(len(p.made) for p in after)} frames of {len(after)} scene(s), in order")
        tasks = _Pieces(runner, pool, clip, folder, result, queue, after)
        if pool.work(queue, tasks, lambda: runner.session.stop_requested):
            result.status = "interrupted"
    else:
        prepared.start()
    if result.status == "done":
        outputs = [images.read_image(folder / frame_name(t)) for t in range(len(clip))]
        errors = pair_warping_errors(outputs, clip.frames, FlowCache(None))
        joins = {first for first, _ in spans if first > 0} - cuts
        at_joins = [e for t, e in errors.items() if t in joins]
        within = [e for t, e in errors.items() if t not in joins and t not in cuts]
        result.join_error = float(np.mean(at_joins)) if at_joins else None
        result.within_error = float(np.mean(within)) if within else None
        local.finish(clip, folder, output)
    result.seconds = time.perf_counter() - start
    return result


class _Pieces:
    """What a clip does with each piece (``engine.cluster.pool.Tasks``): send its frames (and its given first
    result, as on disk), write the frames that come back, retry it when its worker dies."""

    def __init__(self, runner: ClusterRunner, pool: Pool[Piece], clip: Clip, folder: Path, result: ClusterVideoResult,
                 queue: list[Piece], after: dict[Piece, list[Piece]]) -> None:  # fmt: skip
        self.runner, self.pool, self.clip, self.folder, self.result = runner, pool, clip, folder, result
        #: the pool's queue (the same list): a scene's chunks join it when its keys are made
        self.queue, self.after = queue, after
        self.tries: dict[Piece, int] = {}

    def send(self, actor: Any, piece: Piece) -> Any:
        given = [(self.folder / frame_name(t)).read_bytes() for t in piece.frames[: piece.given]]
        ahead = None
        if piece.ahead is not None:
            ahead = (self.clip.frames[piece.ahead], (self.folder / frame_name(piece.ahead)).read_bytes())
        return actor.chunk.remote([self.clip.frames[t] for t in piece.frames], given, ahead)

    def started(self, piece: Piece, actor: Any) -> None:
        pass

    def done(self, piece: Piece, actor: Any, pngs: Any, sent: float) -> None:
        if pngs is None:  # the worker's session was asked to stop
            self.result.status = "interrupted"
            return
        for t, data in zip(piece.made, pngs, strict=True):
            write_atomic(self.folder / frame_name(t), data)
        if piece.keys:
            self.result.keys += len(piece.made)
            self.queue.extend(self.after.pop(piece, []))
        else:
            self.result.made_chunks += 1
        worker = self.pool.pids.get(actor, 0)
        self.runner.say(f"{self._name(piece)} of {len(self.clip)} written (pid {worker})")

    def lost(self, piece: Piece, dead: int, error: BaseException) -> bool:
        self.result.retried += 1
        if not retry_or_give_up(self.tries, piece):
            raise ConfigError(f"{self._name(piece)}: a worker died {self.tries[piece]} times") from None
        self.runner.say(f"worker pid {dead} died; {self._name(piece)} retried")
        return True

    def stalled(self, left: list[Piece]) -> None:
        raise ConfigError("no worker is left on the cluster (its nodes were lost); rerun to continue")

    @staticmethod
    def _name(piece: Piece) -> str:
        made = [t + 1 for t in piece.made]
        if piece.keys:
            return f"keys {', '.join(map(str, made))}"
        return f"frames {made[0]}-{made[-1]}"
