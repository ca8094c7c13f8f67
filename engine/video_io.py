"""Reading and writing clips: a video file (through PyAV, which ships ffmpeg in its wheel) or a folder or glob
of numbered frames. Frames are read once, resized to the run's size, and kept as uint8 RGB arrays (a 132-frame
clip at 456x256 is 46 MB).

A video output is encoded into a temporary file beside it and renamed when complete, with the input's audio
track copied packet for packet when it has one. A folder output is the numbered PNGs themselves.
"""

from __future__ import annotations

import glob as globbing
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nst_engine import images
from nst_engine.errors import ConfigError, ImageError
from nst_engine.files import atomic_path
from nst_engine.resize import fit_long_side, resize

#: Output containers by suffix, with the codec each uses by default.
CONTAINERS = {".mp4": ("mp4", "libx264"), ".mkv": ("matroska", "libx264"), ".mov": ("mov", "libx264")}
CONTAINERS |= {".webm": ("webm", "libvpx-vp9"), ".avi": ("avi", "mpeg4")}
#: Suffixes read as frames in a folder or glob.
FRAME_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
#: Frame rate of an output made from a folder of frames, when --fps is not given.
DEFAULT_FPS = 24
#: The most frames a clip may have (a guard against reading a feature film into memory by mistake).
MAX_FRAMES = 100_000


@dataclass
class Clip:
    """A clip's frames at the run's size, its frame rate, and where it came from (for the audio)."""

    frames: list[np.ndarray]  # (H, W, 3) uint8 RGB, all one size
    fps: Fraction
    source: Path | None  # the video file, when the input was one
    has_audio: bool = False
    original_size: tuple[int, int] = (0, 0)  # (height, width) before resizing

    def __len__(self) -> int:
        return len(self.frames)


def _sized(rgb: np.ndarray, long_side: int | None) -> np.ndarray:
    if long_side is None:
        return np.ascontiguousarray(rgb)
    h, w = fit_long_side(rgb.shape[0], rgb.shape[1], long_side)
    if (h, w) == rgb.shape[:2]:
        return np.ascontiguousarray(rgb)
    tensor = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0
    out = resize(tensor, h, w)[0].permute(1, 2, 0).numpy()
    return np.ascontiguousarray(np.round(out * 255.0).astype(np.uint8))


def _av() -> Any:
    """PyAV, or a one-line error saying how to install it (the GPU machines install the project --no-deps)."""
    try:
        import av
    except ImportError:
        raise ConfigError("video needs PyAV: pip install av") from None
    return av


def is_pattern(text: str) -> bool:
    return any(c in text for c in "*?[")


def frame_files(source: str) -> list[Path]:
    """The frames of a folder or glob, in name order (numbers compare as numbers: frame2 before frame10)."""
    paths = [Path(p) for p in globbing.glob(source)] if is_pattern(source) else list(Path(source).iterdir())
    paths = [p for p in paths if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES]
    if not paths:
        raise ConfigError(f"no frames (.png, .jpg, ...) in '{source}'; give a video file or a folder of frames")
    return sorted(paths, key=_natural)


def clip_inputs(source: str) -> list[Path]:
    """The paths a clip is read from, for the check that no output overlaps them: the video file, the frames
    folder, or the files a glob matches (and the folders they are in)."""
    if is_pattern(source):
        files = [Path(p) for p in globbing.glob(source)]
        return files + sorted({p.parent for p in files})
    return [Path(source)]


def _natural(path: Path) -> list[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def read_clip(
    source: str, long_side: int | None, max_pixels: int = images.DEFAULT_MAX_PIXELS, limit: int | None = None
) -> Clip:
    """The frames of ``source`` (a video file, a folder of frames or a glob) at ``long_side``; the first ``limit``
    when given."""
    if limit is not None and limit < 1:
        raise ConfigError(f"--frames must be 1 or more, not {limit}")
    path = Path(source)
    if is_pattern(source) or path.is_dir():
        return _read_frames(source, long_side, max_pixels, limit or MAX_FRAMES)
    if not path.is_file():
        raise ConfigError(f"'{source}' not found; give a video file, a folder of frames or a glob like 'f/*.png'")
    return _read_video(path, long_side, max_pixels, limit or MAX_FRAMES)


def _read_frames(source: str, long_side: int | None, max_pixels: int, limit: int) -> Clip:
    files = frame_files(source)[:limit]
    if len(files) > MAX_FRAMES:
        raise ConfigError(f"'{source}' has {len(files)} frames, over the limit of {MAX_FRAMES}; split the clip")
    frames, first = [], None
    for file in files:
        rgb = images.read_image(file, max_pixels)  # float32 RGB in [0, 1]: the CLI's checks for every frame
        if first is None:
            first = rgb.shape[:2]
        elif rgb.shape[:2] != first:
            raise ImageError(
                f"frame '{file.name}' is {rgb.shape[1]}x{rgb.shape[0]} but the first frame is {first[1]}x{first[0]}; "
                "every frame of a clip must be one size"
            )
        frames.append(_sized(np.round(rgb * 255.0).astype(np.uint8), long_side))
    assert first is not None
    return Clip(frames, Fraction(DEFAULT_FPS), None, False, (int(first[0]), int(first[1])))


def _read_video(path: Path, long_side: int | None, max_pixels: int, limit: int) -> Clip:
    av = _av()
    try:
        container = av.open(str(path))
    except av.EOFError:
        raise ImageError(f"'{path}' has no frames (it ends after its header); give a video with frames") from None
    except (av.FFmpegError, UnicodeDecodeError) as exc:
        raise ImageError(f"'{path}' is not a video ffmpeg can read ({_reason(exc)}); give a video file") from None
    with container:
        if not container.streams.video:
            raise ImageError(f"'{path}' has no video stream; give a video file")
        stream = container.streams.video[0]
        if stream.width * stream.height > max_pixels:
            raise ImageError(
                f"'{path}' is {stream.width}x{stream.height}, over the {max_pixels} pixel limit; "
                "raise --max-input-pixels if you trust it"
            )
        fps = Fraction(stream.average_rate) if stream.average_rate else Fraction(DEFAULT_FPS)
        frames: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                if len(frames) >= limit:
                    if limit == MAX_FRAMES:
                        raise ConfigError(f"'{path}' has over {MAX_FRAMES} frames; split the clip, or give --frames")
                    break
                frames.append(_sized(frame.to_ndarray(format="rgb24"), long_side))
        except av.FFmpegError as exc:
            if not frames:
                raise ImageError(f"'{path}' could not be decoded ({_reason(exc)}); give a video file") from None
            # a damaged tail: the frames before it are kept, as players do
        if not frames:
            raise ImageError(f"'{path}' has no frames; give a video with at least one frame")
        return Clip(frames, fps, path, bool(container.streams.audio), (stream.height, stream.width))


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:120]


def output_kind(output: Path) -> str:
    """ "video" for a known container suffix, "frames" for a folder (no suffix), else ConfigError."""
    suffix = output.suffix.lower()
    if suffix in CONTAINERS:
        return "video"
    if suffix == "" or output.is_dir():
        return "frames"
    known = ", ".join(CONTAINERS)
    raise ConfigError(f"cannot write video '{output.name}': use one of {known}, or a folder for numbered PNGs")


def check_codec(output: Path, codec: str | None, audio_from: Path | None = None) -> str:
    """The codec for a video ``output``: the container's default or ``codec``, checked before the first frame is
    made by encoding a tiny trial clip into memory with the same container, pixel format and audio track (a codec
    this ffmpeg lacks, an audio codec, or one the container cannot hold is a one-line error, not a crash after
    every frame was computed)."""
    av = _av()
    suffix = output.suffix.lower()
    name = codec or CONTAINERS[suffix][1]
    try:
        found = av.codec.Codec(name, "w")
    except (av.codec.codec.UnknownCodecError, ValueError):
        raise ConfigError(f"unknown video codec '{name}'; try libx264, mpeg4 or libvpx-vp9") from None
    if found.type != "video":
        raise ConfigError(f"'{name}' is an {found.type} codec, not a video one; try --codec libx264")
    try:
        _trial_encode(av, CONTAINERS[suffix][0], name, audio_from)
    except (av.error.FFmpegError, ValueError, TypeError, OSError) as exc:
        default = CONTAINERS[suffix][1]
        hint = f"--codec {default}" if name != default else "another container suffix such as .mkv"
        raise ConfigError(f"cannot write {name} video into a {suffix} file ({_reason(exc)}); try {hint}") from None
    return name


def _trial_encode(av: Any, container_format: str, codec: str, audio_from: Path | None) -> None:
    with av.open(io.BytesIO(), "w", format=container_format) as out:
        stream = out.add_stream(codec, rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        if audio_from is not None:
            with av.open(str(audio_from)) as source:
                if source.streams.audio:
                    out.add_stream_from_template(source.streams.audio[0])
        frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode()]:
            out.mux(packet)


def frame_name(index: int) -> str:
    """The file name of frame ``index`` (0-based) in a frames folder: frame_000001.png, ..."""
    return f"frame_{index + 1:06d}.png"


def write_video(
    output: Path, frames: Iterator[np.ndarray], fps: Fraction, codec: str, audio_from: Path | None, crf: int = 18
) -> None:
    """Encode ``frames`` (H, W, 3) uint8 RGB into ``output`` at ``fps``, copying ``audio_from``'s first audio
    stream; written to a temporary file and renamed when complete."""
    av = _av()
    container_format = CONTAINERS[output.suffix.lower()][0]
    with atomic_path(output) as tmp:
        source = av.open(str(audio_from)) if audio_from is not None else None
        try:
            with av.open(str(tmp), "w", format=container_format) as out:
                video: Any = None
                audio_in = source.streams.audio[0] if source is not None and source.streams.audio else None
                audio_out = out.add_stream_from_template(audio_in) if audio_in is not None else None
                for rgb in frames:
                    if video is None:
                        stream = out.add_stream(codec, rate=fps)
                        assert isinstance(stream, av.VideoStream)
                        video = stream
                        video.width, video.height = rgb.shape[1] // 2 * 2, rgb.shape[0] // 2 * 2
                        video.pix_fmt = "yuv420p"
                        if codec in ("libx264", "libx265"):
                            video.options = {"crf": str(crf)}
                    height, width = int(video.height), int(video.width)
                    even = np.ascontiguousarray(rgb[:height, :width])
                    for packet in video.encode(av.VideoFrame.from_ndarray(even, format="rgb24")):
                        out.mux(packet)
                if video is None:
                    raise ImageError("no frames to write")
                for packet in video.encode():
                    out.mux(packet)
                if audio_in is not None and source is not None and audio_out is not None:
                    for packet in source.demux(audio_in):
                        if packet.dts is None:
                            continue
                        packet.stream = audio_out
                        out.mux(packet)
        finally:
            if source is not None:
                source.close()
