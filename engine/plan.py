"""The scale plan of a run and the values a run hands around: what each scale is, a video frame's guide, the
result, and the checks and hand-off between scales that do not need the network (``engine.stylize`` runs them)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from nst_engine.checkpoint import Checkpoint
from nst_engine.config import StyleConfig
from nst_engine.errors import ConfigError
from nst_engine.layers import min_input_size
from nst_engine.optim.loop import Step
from nst_engine.optim.registry import Tuning
from nst_engine.resize import resize
from nst_engine.tiling import Plan


@dataclass(frozen=True)
class ScaleInfo:
    """One scale of a run, announced before its first step."""

    index: int
    count: int
    size: tuple[int, int]  # (height, width)
    steps: int
    tiling: Plan | None = None  # how the scale is tiled, when it is


#: Called when a scale starts.
ScaleListener = Callable[[ScaleInfo], None]


@dataclass(frozen=True)
class Level:
    """One scale of the plan: its long side, the steps run there and the style image's long side."""

    index: int
    long_side: int
    steps: int
    style_side: int


@dataclass(frozen=True)
class ScalePlan:
    """The scales of a run, coarse to fine, computed once from the settings (pystiche's image pyramid)."""

    levels: tuple[Level, ...]

    @classmethod
    def of(cls, config: StyleConfig) -> ScalePlan:
        sizes = config.scale_sizes()
        smallest = min_input_size(config.style_layers)
        levels = [Level(i, side, config.level_steps(i, len(sizes)), max(smallest, round(side * config.style_scale)))
                  for i, side in enumerate(sizes)]  # fmt: skip
        return cls(tuple(levels))

    @property
    def total_steps(self) -> int:
        return sum(level.steps for level in self.levels)

    def todo(self, resume: Checkpoint | None, frame: FrameGuide | None) -> tuple[Level, ...]:
        """The levels a run goes through: from a checkpoint's scale on; only the last for a video frame (which
        starts close to its result); every one otherwise."""
        if resume is not None and resume.scale >= len(self.levels):
            raise ConfigError("nothing to do: the checkpoint is already past the last scale")
        if frame is not None:
            return self.levels[-1:]
        return self.levels[resume.scale if resume is not None else 0 :]


@dataclass(frozen=True)
class FrameGuide:
    """One video frame's run: it starts from ``init`` and its temporal term compares the image with earlier
    results warped into this frame, each (1, 3, H, W) with its certainty (1, 1, H, W), at the content's size.
    It runs ``steps`` steps at the final scale only (it starts close to its result)."""

    init: torch.Tensor | None  # None: the run's own start (--init), as an independent frame has
    warped: list[tuple[torch.Tensor, torch.Tensor]]
    weight: float
    steps: int


@dataclass
class StylizeResult:
    image: torch.Tensor  # (1, 3, H, W) float32 in [0, 1], on the CPU
    steps: list[Step] = field(default_factory=list)
    interrupted: bool = False
    recoveries: int = 0
    #: Where the run stopped, to continue it with ``resume=``.
    checkpoint: Checkpoint | None = None


def hw(image: torch.Tensor) -> tuple[int, int]:
    return int(image.shape[-2]), int(image.shape[-1])


def check_mask_count(masks: Sequence[object] | None, styles: Sequence[object]) -> None:
    """One mask per style, or none."""
    if masks and len(masks) != len(styles):
        raise ConfigError(f"{len(masks)} masks for {len(styles)} styles; give one --mask per --style")


def check_mask(mask: torch.Tensor, content: torch.Tensor, what: str) -> torch.Tensor:
    """A (1, 1, H, W) mask in [0, 1] of the content's aspect ratio that covers something, else ConfigError."""
    if mask.ndim != 4 or mask.shape[:2] != (1, 1):
        raise ConfigError(f"{what} must be a (1, 1, H, W) tensor, not {tuple(mask.shape)}")
    (ch, cw), (mh, mw) = hw(content), hw(mask)
    if abs(mh / mw - ch / cw) > 0.02 * ch / cw:
        raise ConfigError(
            f"{what} is {mw}x{mh} but the content image is {cw}x{ch}: different aspect ratios; "
            "make the mask from the content image"
        )
    if float(mask.max()) <= 0.0:
        raise ConfigError(f"{what} covers no pixel (all black); paint the region white")
    return mask.clamp(0.0, 1.0)


def handoff(previous: torch.Tensor, start: torch.Tensor, smoothing: float = Tuning.handoff_smoothing) -> torch.Tensor:
    """The next scale's first image: ``start``'s fine detail plus the coarse result's change to it, smoothed.

    Upsampling the coarse result alone gives a blurred image, and a deep content layer sees the photo's fine
    detail gone, so the fine scale spends its first steps putting it back. So the start image's detail (the
    photo, or an --init-image) is kept and the coarse change added to it, a Laplacian-pyramid step.

    The change is first reduced to 1/``smoothing`` of the coarse resolution: the coarse scale is for the
    arrangement of colour and shape, which the fine scale's receptive fields cannot see whole. Its texture is
    tuned to the coarse sampling; upsampled, it is a texture twice too large that the fine scale has to unpick
    (measured in bench/reports/cpu-2core-multiscale/).
    """
    h, w = hw(start)
    start = start.to(previous.device)
    ph, pw = hw(previous)
    change = previous - resize(start, ph, pw)
    if smoothing > 1:
        small = (max(1, round(ph / smoothing)), max(1, round(pw / smoothing)))
        change = F.interpolate(change, size=small, mode="bilinear", align_corners=False, antialias=True)
    up = F.interpolate(change, size=(h, w), mode="bicubic", align_corners=False)
    return (start + up).clamp(0.0, 1.0)
