"""What a session tells its listeners: the CLI draws them, the Python API hands them to a callback, and the
runners (video, the cluster, the web page) forward them. Plain frozen dataclasses, so a listener can
pattern-match on them and any of them can be sent across a process boundary."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # a type only: the events stay light to import
    from nst_engine.optim.loop import Step


@dataclass(frozen=True)
class Note:
    """A line for the user: the provider chosen, the weights' label, a model being exported, a cache warning."""

    text: str
    level: Literal["info", "warning"] = "info"


@dataclass(frozen=True)
class ImageStarted:
    index: int  # 0-based, of ``count`` images this run stylizes
    count: int
    content: str
    output: Path | None


@dataclass(frozen=True)
class ScaleStarted:
    image: int  # the image's index
    scale: int  # 0-based, of ``scales``
    scales: int
    size: tuple[int, int]  # (height, width)
    steps: int
    tiles: int = 0  # 0: run whole; else the number of tiles of ``tile`` px with a ``halo`` px overlap
    tile: int = 0
    halo: int = 0
    peak_bytes: int = 0  # the estimate for the tiled run
    history: int = 0  # the L-BFGS pairs kept (shortened when the setting's would not fit)


@dataclass(frozen=True)
class StepDone:
    """One optimisation step finished. ``record`` is the step as the trace keeps it."""

    image: int
    step: Step
    record: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageDone:
    """An image finished: ``status`` is done, or interrupted (a stop request; ``checkpoint`` continues it)."""

    image: int
    content: str
    output: Path | None
    status: Literal["done", "interrupted"]
    seconds: float
    losses: dict[str, float]
    steps: int
    targets: dict[str, Any]  # the target records' summary (engine.targets.target_summary)
    checkpoint: Path | None = None
    stop_reason: str = ""


@dataclass(frozen=True)
class ImageFailed:
    image: int
    content: str
    output: Path | None
    message: str
    seconds: float


@dataclass(frozen=True)
class ImageSkipped:
    content: str
    output: Path
    reason: str


Event = Note | ImageStarted | ScaleStarted | StepDone | ImageDone | ImageFailed | ImageSkipped
Listener = Callable[[Event], None]
