"""One image's progress and outcome as a run goes: the step recorder that numbers steps, emits events and keeps
the trace's records, and the result a front door gets back (``engine.records`` holds what they write)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from nst_engine.checkpoint import Checkpoint
from nst_engine.events import Event, ScaleStarted, StepDone
from nst_engine.optim.loop import Step
from nst_engine.plan import ScaleInfo, StylizeResult
from nst_engine.records import ImageTrace, step_record

Status = Literal["done", "skipped", "failed", "interrupted"]


@dataclass
class ImageResult:
    """How one content image ended, with everything the trace keeps about it."""

    content: str
    output: Path | None
    status: Status
    seconds: float = 0.0
    message: str = ""
    image: torch.Tensor | None = None  # (1, 3, H, W) in [0, 1] on the CPU, when one was made
    steps: list[dict[str, Any]] = field(default_factory=list)  # the trace's step records
    checkpoint: Path | None = None  # written when the run was stopped
    result: StylizeResult | None = None
    trace: dict[str, Any] = field(default_factory=dict)

    @property
    def losses(self) -> dict[str, float]:
        """The last step's loss terms ({} when no step ran)."""
        return dict(self.steps[-1]["losses"]) if self.steps else {}


class StepRecorder:
    """One image's progress as the trace and the listeners see it: its scales and its step records (numbered on
    from the steps a resumed run had done), with a hook for ``--save-every`` images and one for a live preview."""

    def __init__(
        self,
        index: int,
        offset: int,
        emit: Callable[[Event], None],
        save: Callable[[int, Callable[[], torch.Tensor]], None] | None = None,
        on_image: Callable[[int, Callable[[], torch.Tensor]], None] | None = None,
    ) -> None:
        self.index, self.offset, self.emit, self.save, self.on_image = index, offset, emit, save, on_image
        self.start = time.perf_counter()
        self.records: list[dict[str, Any]] = []
        self.scales: list[dict[str, Any]] = []

    def scale(self, info: ScaleInfo) -> None:
        plan = info.tiling
        entry: dict[str, Any] = {"scale": info.index, "size": list(info.size), "steps": info.steps}
        entry["tiled"] = plan is not None
        if plan is not None:
            entry |= {"tiles": len(plan.tiles), "tile": plan.tile, "halo": plan.halo}
            entry |= {"estimated_peak_bytes": plan.peak_bytes, "lbfgs_history": plan.history}
        self.scales.append(entry)
        tiled = () if plan is None else (len(plan.tiles), plan.tile, plan.halo, plan.peak_bytes, plan.history)
        self.emit(ScaleStarted(self.index, info.index, info.count, info.size, info.steps, *tiled))

    def step(self, step: Step, image: Callable[[], torch.Tensor]) -> None:
        number = self.offset + len(self.records) + 1
        record = step_record(step, number, time.perf_counter() - self.start)
        self.records.append(record)
        if self.save is not None:
            self.save(number, image)
        self.emit(StepDone(self.index, step, record))
        if self.on_image is not None:
            self.on_image(number, image)


def image_trace(
    done: ImageResult,
    made: tuple[list[str], dict[str, Any], str | None],
    targets: dict[str, Any],
    earlier: list[dict[str, Any]],
    scales: list[dict[str, Any]],
    resumed: tuple[Checkpoint, Path | None] | None,
) -> ImageTrace:
    """One image's trace: ``made`` is (the styles' names, the settings, the preset); ``earlier`` the steps of the
    interrupted run a resumed one continues, and ``resumed`` its checkpoint and the checkpoint's path."""
    result = done.result
    assert result is not None
    resumed_from = None
    if resumed is not None:
        checkpoint, path = resumed
        resumed_from = {"checkpoint": None if path is None else str(path), "scale": checkpoint.scale,
                        "step": checkpoint.step, "steps_before": checkpoint.steps_done}  # fmt: skip
    outcome = {
        "interrupted": result.interrupted,
        "recoveries": result.recoveries,
        "seconds": round(done.seconds, 3),
        "size": list(result.image.shape[-2:]),
    }
    styles, settings, preset = made
    return ImageTrace(done.content, done.output, styles, settings, preset, targets, earlier + done.steps, outcome,
                      scales, resumed_from)  # fmt: skip
