"""Video without flicker: a clip stylised frame by frame through one Session, with Ruder et al.'s temporal loss.

Frame 0 is a normal run (its --steps, its scales). Every later frame t starts from the previous result warped into
it (filled in from around where it was disoccluded) and runs --frame-steps at the final size with the temporal term: the
image is pulled towards the results of frames t-1, t-2, t-4, ... warped into frame t, where the flow is certain
(``engine.flow``). With --temporal-weight 0 the frames are independent (each starts as --init says).

Every finished frame is written, atomically, to a frames folder (the output itself for a folder output, else
``OUT.frames/`` beside it) with a manifest of the run. A rerun of the same command reads the finished frames back
and carries on at the first missing one; as every frame is made from the frames on disk, in 8 bits, the video is
the same as an uninterrupted run's. The video file is encoded at the end, and the frames folder removed then.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

import nst_engine
from nst_engine import flow, images
from nst_engine.errors import ConfigError
from nst_engine.events import Note
from nst_engine.files import read_limited, write_atomic
from nst_engine.flow import Ahead, FlowCache, guide, warping_error
from nst_engine.jobs import check_apart, check_writable
from nst_engine.plan import FrameGuide
from nst_engine.session import Session
from nst_engine.spec import default_cache_dir
from nst_engine.targets import target_summary
from nst_engine.video_io import Clip, check_codec, clip_inputs, frame_name, output_kind, write_video
from nst_engine.video_settings import DEFAULT_TEMPORAL_WEIGHT, VideoSettings

MANIFEST = "nst-engine-video.json"

__all__ = ["DEFAULT_TEMPORAL_WEIGHT", "FrameDone", "VideoResult", "VideoRun", "VideoSettings", "flow_cache"]


@dataclass
class FrameDone:
    """An event: frame ``index`` of ``count`` is on disk (``resumed``: it was there from an earlier run)."""

    index: int
    count: int
    path: Path
    seconds: float
    resumed: bool
    losses: dict[str, float] = field(default_factory=dict)


@dataclass
class VideoResult:
    status: str  # "done" or "interrupted"
    frames_dir: Path
    output: Path
    frames: int
    made: int  # frames made by this run (the rest were resumed)
    seconds: float
    warping_error: float | None = None
    losses: list[dict[str, float]] = field(default_factory=list)
    frame_seconds: list[float] = field(default_factory=list)  # 0 for a frame from an earlier run
    #: Each frame's total loss after each of its steps ([] for a frame from an earlier run).
    curves: list[list[float]] = field(default_factory=list)


#: No manifest of this tool is larger: a bigger file is not read, and counts as another run's.
MAX_MANIFEST_BYTES = 1 << 20


@dataclass
class Prepared:
    """A checked video run, before anything is written: its frames folder, the manifest to write, and the
    frames of another run to remove (with --overwrite)."""

    folder: Path
    manifest: dict[str, Any]
    stale: list[Path]

    def start(self) -> Path:
        for path in self.stale:
            path.unlink(missing_ok=True)
        write_atomic(self.folder / MANIFEST, (json.dumps(self.manifest, indent=2) + "\n").encode())
        return self.folder


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(read_limited(path, MAX_MANIFEST_BYTES))
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _differences(earlier: dict[str, Any] | None, now: dict[str, Any]) -> list[str]:
    """What differs between two manifests, as a person would name it: 'settings (content_mask, size)'."""
    if earlier is None:
        return ["settings (its manifest is unreadable)"]
    names = {
        "frames_sha256": "input frames", "styles": "style images", "masks": "style masks",
        "content_mask": "content mask", "init": "init image", "video": "video settings", "frames": "frame count",
        "engine_version": "engine version",
    }  # fmt: skip
    differ = []
    for key in sorted(set(earlier) | set(now)):
        if json.dumps(earlier.get(key)) == json.dumps(now.get(key)):
            continue
        if key == "settings" and isinstance(earlier.get(key), dict):
            before, after = earlier[key], now[key]
            changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
            differ.append(f"settings ({', '.join(changed[:5])})")
        else:
            differ.append(names.get(key, key))
    return differ


def frames_folder(output: Path) -> Path:
    """Where the finished frames go: the output itself when it is a folder, else ``OUT.frames`` beside it."""
    return output if output_kind(output) == "frames" else output.with_name(output.name + ".frames")


def _rgb(frame: np.ndarray) -> torch.Tensor:
    return (torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float() / 255.0).contiguous()


class VideoRun:
    """One clip through one session (opened once: the network, the model, the style targets)."""

    def __init__(
        self, session: Session, settings: VideoSettings, flows: FlowCache, on_frame: Callable[[FrameDone], None]
    ):
        self.session, self.settings, self.flows, self.on_frame = session, settings, flows, on_frame

    def manifest(self, clip: Clip, source: str, chunks: list[tuple[int, int]] | None = None) -> dict[str, Any]:
        """Everything that shapes this run's frames: the input's pixels, every setting, the styles, masks and
        init image by content, and the model by content (a file replaced at the same path is another model)."""
        digest = hashlib.sha256()
        for frame in clip.frames:
            digest.update(frame.tobytes())
        session = self.session
        manifest = {
            "engine_version": nst_engine.__version__,
            "input": source,
            "frames": len(clip),
            "frames_sha256": digest.hexdigest(),
            "settings": session.config.to_dict(),
            # What shapes the frames, not how the file is written or where the work runs.
            "video": asdict(self.settings) | {"keep_frames": None, "codec": None, "fps": None, "chunk_frames": None},
            **session.inputs_identity,  # styles, masks, content mask, init image and model, by content
            "new_pixels": flow.NEW_PIXEL_START,  # what disoccluded pixels start from (frames before it differ)
        }
        if chunks is not None:  # a cluster run's frames follow its chunks: not a local run's, nor other chunks'
            manifest["chunks"] = chunks
            # each chunk from its scene's chain of keys, drawn toward the next key (engine.cluster.video)
            manifest["chunk_starts"] = "keys, toward the next"
        normal: dict[str, Any] = json.loads(json.dumps(manifest))  # as it reads back (tuples become lists)
        return normal

    def check(
        self, clip: Clip, output: Path, source: str, overwrite: bool, chunks: list[tuple[int, int]] | None = None
    ) -> Prepared:
        """Every check before the first frame, writing nothing: the output, the codec, the frames folder and its
        manifest. ``Prepared.start`` writes, once the run can start (the model is open)."""
        kind = output_kind(output)
        if kind == "video":
            check_codec(output, self.settings.codec, clip.source if clip.has_audio else None)
            if output.exists() and not overwrite:
                raise ConfigError(f"'{output}' exists; pass --overwrite to replace it")
        folder = frames_folder(output)
        inputs = clip_inputs(source) + self.session.inputs
        for what, path in (("-o", output), ("the frames folder", folder)):
            check_apart(what, path, inputs)
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"the frames folder '{folder}' is a file; remove it or choose another -o")
        check_writable("frame", folder / frame_name(0))
        manifest = self.manifest(clip, source, chunks)
        mine = folder / MANIFEST
        ours = [p for p in folder.glob("frame_*.png")] if folder.is_dir() else []
        if mine.exists() or mine.is_symlink():
            if not mine.is_file() or mine.is_symlink():
                raise ConfigError(f"'{mine}' is not a file (a folder or a link); remove it, or choose another -o")
            differ = _differences(_read_manifest(mine), manifest)
            if differ and not overwrite:
                raise ConfigError(
                    f"'{folder}' holds frames of another run (other {', '.join(differ[:6])}); pass --overwrite "
                    "to start again, or choose another -o"
                )
            return Prepared(folder, manifest, ours if differ else [])
        if ours and not overwrite:
            raise ConfigError(
                f"'{folder}' already has frame_*.png files this tool did not record; pass --overwrite to "
                "replace them, or choose another -o"
            )
        return Prepared(folder, manifest, ours)

    def run(self, clip: Clip, output: Path, source: str, overwrite: bool = False) -> VideoResult:
        start = time.perf_counter()
        prepared = self.check(clip, output, source, overwrite)
        session = self.session
        session.open()
        folder = prepared.start()
        results: list[np.ndarray] = []  # each finished frame as read back from disk, (H, W, 3) float32
        losses: list[dict[str, float]] = []
        seconds: list[float] = []
        curves: list[list[float]] = []
        made = 0
        count = len(clip)
        for t in range(count):
            path = folder / frame_name(t)
            if path.is_file():
                results.append(images.read_image(path))
                losses.append({})
                seconds.append(0.0)
                curves.append([])
                self.on_frame(FrameDone(t, count, path, 0.0, True))
                continue
            began = time.perf_counter()
            frame = self._guide(clip.frames, results, t)
            done = session.stylize(_rgb(clip.frames[t]), None, frame=frame, index=t, count=count)
            if done.status != "done" or done.image is None:
                return VideoResult("interrupted", folder, output, count, made, time.perf_counter() - start)
            images.save(done.image, path)
            results.append(images.read_image(path))  # what a resumed run would read: the same next frames
            losses.append(done.losses)
            seconds.append(time.perf_counter() - began)
            curves.append([float(f"{r['losses']['total']:.5g}") for r in done.steps if "total" in r["losses"]])
            made += 1
            self.on_frame(FrameDone(t, count, path, time.perf_counter() - began, False, done.losses))
            if session.stop_requested:
                return VideoResult("interrupted", folder, output, count, made, time.perf_counter() - start)
        error = warping_error(results, clip.frames, self.flows) if count > 1 else None
        self.finish(clip, folder, output)
        took = time.perf_counter() - start
        return VideoResult("done", folder, output, count, made, took, error, losses, seconds, curves)

    def trace(self, result: VideoResult) -> dict[str, Any]:
        """The run's JSON trace: how it ended, the video and stylize settings, each frame's losses, seconds and
        loss after each step, the flows and the targets."""
        session = self.session
        return {
            "status": result.status,
            "frames": result.frames,
            "made": result.made,
            "seconds": round(result.seconds, 3),
            "warping_error": result.warping_error,
            "video": self.settings.to_dict(),
            "settings": session.config.to_dict(),
            "weights": session.model.info.weights_label,
            "frame_losses": result.losses,
            "frame_seconds": [round(v, 3) for v in result.frame_seconds],
            "frame_loss_curves": result.curves,
            "flows": {"hits": self.flows.hits, "computed": self.flows.misses},
            "targets": target_summary(session.targets.records),
        }

    def write_trace(self, path: Path, result: VideoResult) -> None:
        write_atomic(path, (json.dumps(self.trace(result), indent=2) + "\n").encode())

    def finish(self, clip: Clip, folder: Path, output: Path) -> None:
        """Encode the frames into a video output (then remove them, unless --keep-frames); nothing for a folder."""
        settings, count = self.settings, len(clip)
        if output_kind(output) != "video":
            return
        fps = Fraction(settings.fps).limit_denominator(1001) if settings.fps else clip.fps
        codec = check_codec(output, settings.codec)
        audio = clip.source if clip.has_audio else None
        write_video(output, _frames_from(folder, count), fps, codec, audio)
        if not settings.keep_frames:
            _remove_frames(folder, count)
        self.session.emit(Note(f"encoded {count} frames at {float(fps):g} fps with {codec}"))

    def chunk(
        self, frames: Sequence[np.ndarray], given: Sequence[bytes] = (), ahead: tuple[np.ndarray, bytes] | None = None
    ) -> list[bytes] | None:
        """A run of consecutive frames as PNG files' bytes, with nothing on disk (a cluster worker's share of a
        clip); None if stopped. The first frames' results may be ``given`` (PNG bytes, as on disk): the run goes on
        from them and returns the others. The first frame made is a normal run if none is given. Each result is
        read back from its PNG bytes before the next frame uses it, as a run from disk would.

        ``ahead`` is the frame right after these (its content and its result's PNG bytes) when its result is
        already fixed, as the next chunk's key is: the frames are drawn toward it a step at a time (``flow.Ahead``),
        so that the clip does not jump where the next chunk begins."""
        results: list[np.ndarray] = [images.decode_png(data) for data in given]
        later = None if ahead is None else (ahead[0], images.decode_png(ahead[1]))
        out: list[bytes] = []
        for t in range(len(results), len(frames)):
            toward = None if later is None else Ahead(later[0], later[1], len(frames) - t)
            done = self.session.stylize(_rgb(frames[t]), None, frame=self._guide(frames, results, t, toward))
            if done.status != "done" or done.image is None:
                return None
            data = images.encode_png(done.image)
            out.append(data)
            results.append(images.decode_png(data))
        return out

    def _guide(
        self, frames: Sequence[np.ndarray], results: Sequence[np.ndarray], t: int, ahead: Ahead | None = None
    ) -> FrameGuide | None:
        settings = self.settings
        if t == 0:
            return None  # the first frame is a normal run: its steps and scales
        content = frames[t]
        if settings.temporal_weight == 0:
            return FrameGuide(None, [], 0.0, settings.frame_steps)  # independent: each frame from its own start
        earlier = [(frames[t - j], results[t - j]) for j in settings.temporal_frames if t - j >= 0]
        g = guide(content, earlier, self.flows, ahead)
        warped = [
            (torch.from_numpy(w).permute(2, 0, 1)[None], torch.from_numpy(c)[None, None])
            for w, c in zip(g.warped, g.weights, strict=True)
        ]
        init = torch.from_numpy(g.init).permute(2, 0, 1)[None].clamp(0.0, 1.0)
        return FrameGuide(init, warped, settings.temporal_weight, settings.frame_steps)


def flow_cache(session: Session) -> FlowCache:
    """Flows beside the targets in the session's cache (``flows/``), or none kept with --no-cache."""
    spec = session.spec
    if not spec.use_cache:
        return FlowCache(None)
    warn = lambda text: session.emit(Note(text, "warning"))  # noqa: E731
    return FlowCache((spec.cache_dir or default_cache_dir()) / "flows", warn)


def _frames_from(folder: Path, count: int) -> Iterator[np.ndarray]:
    for t in range(count):
        yield np.round(images.read_image(folder / frame_name(t)) * 255.0).astype(np.uint8)


def _remove_frames(folder: Path, count: int) -> None:
    """Remove the frames and manifest this run wrote, and the folder if nothing else is in it."""
    for t in range(count):
        (folder / frame_name(t)).unlink(missing_ok=True)
    (folder / MANIFEST).unlink(missing_ok=True)
    if folder.is_dir() and not any(folder.iterdir()):
        shutil.rmtree(folder, ignore_errors=True)
