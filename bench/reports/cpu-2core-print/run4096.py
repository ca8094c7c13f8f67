"""The default plan at 4096 px (issue 34 item 3), timed alone, then judged against its own 2048 px scale.

python bench/reports/cpu-2core-print/run4096.py make    # about 47 minutes on 2 cores, nothing else running
python bench/reports/cpu-2core-print/run4096.py judge   # reads the run back; a separate process, for memory

``make`` writes ``print-4096-default.json`` (the time of each scale) and each scale's 16-bit picture (not committed)
through bench/printsize.py, as ``nst-engine bench --case print`` does; the 500-step reference at 2048 px that the
case would add (over two hours at 19 s a step) is not made. ``judge`` scores the 4096 px result against the plan's
2048 px scale: colour (Lab W1) and fine detail at 4096 px (the 2048 px scale scaled up), the VGG judge's feature
distances at 2048 px (the 4096 px result scaled down: at 4096 px the judge does not fit in 24 GiB); it writes
``print-4096.json`` and a crop panel (``print-4096-crops.png``: left the 2048 px scale scaled up, right the 4096 px
result).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from nst_engine import images
from nst_engine.bench.losses import _net, fine_detail, lab_w1
from nst_engine.bench.printsize import PrintJudge, _made, save_crops
from nst_engine.config import StyleConfig
from nst_engine.resize import resize

SAMPLES = Path(__file__).resolve().parents[3].parent / "shared" / "images"
HERE = Path(__file__).resolve().parent
SIZE = 4096


def main() -> None:
    what = sys.argv[1] if len(sys.argv) > 1 else "make"
    net = _net(StyleConfig().layers)
    photo = images.load(SAMPLES / "content_tubingen.jpg", SIZE)
    painting = images.load(SAMPLES / "style_starry_night.jpg", SIZE)
    timing, levels = _made(net, "default", StyleConfig(size=SIZE), photo, painting, HERE / f"print-{SIZE}-default",
                           lambda m: print(m, flush=True))  # fmt: skip
    if what != "judge":
        print(json.dumps(timing), flush=True)
        return
    del net
    # The VGG judge of a 4096 px picture does not fit in 24 GiB (killed at 24.4 GB): the colour and fine-detail
    # measures are taken at 4096 px (no network), the feature distances at 2048 px, where the plan's 2048 px
    # scale is itself and the 4096 px result is scaled down.
    final = resize(levels[-1], *photo.shape[-2:]).clamp(0, 1)
    half = resize(levels[-2], *photo.shape[-2:]).clamp(0, 1)
    rows = [
        {"run": "default at 4096 px", "judged_at": SIZE, **timing, "lab_w1": lab_w1(final, painting),
         "fine_detail": fine_detail(final) / fine_detail(painting)},
        {"run": "its 2048 px scale, scaled up", "judged_at": SIZE, "lab_w1": lab_w1(half, painting),
         "fine_detail": fine_detail(half) / fine_detail(painting)},
    ]  # fmt: skip
    save_crops([half, final], HERE / f"print-{SIZE}-crops.png")
    small = levels[-2]
    small_photo, small_painting = resize(photo, *small.shape[-2:]), resize(painting, *small.shape[-2:])
    del photo, painting, final, half
    judge = PrintJudge()
    judge.fix(small_photo, small_painting)
    for name, image in (("default at 4096 px, scaled down", resize(levels[-1], *small.shape[-2:]).clamp(0, 1)),
                        ("its 2048 px scale", small)):  # fmt: skip
        rows.append({"run": name, "judged_at": SIZE // 2, **judge.scores(small_photo, image, small_painting)})
    for row in rows:
        print(row["run"], {k: round(row[k], 4) for k in ("other_sw", "lab_w1", "fine_detail") if k in row}, flush=True)
    (HERE / f"print-{SIZE}.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
