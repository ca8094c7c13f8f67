"""Terminal progress and the JSON trace: the two listeners of a run's Step events."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from engine import images
from engine.files import write_atomic
from engine.optim.loop import Step
from engine.targets import TargetRecord

SHOWN_TERMS = ("content", "style", "tv", "total")


def format_losses(losses: dict[str, float]) -> str:
    return " ".join(f"{k} {losses[k]:.3g}" for k in SHOWN_TERMS if k in losses)


class StepReporter:
    """Draws one progress line per scale and keeps every step for the trace; saves every N steps if asked."""

    def __init__(
        self, progress: Progress | None, save_every: int = 0, save_path: Callable[[int], Path] | None = None
    ) -> None:
        self.progress = progress
        self.save_every = save_every
        self.save_path = save_path
        self.steps: list[dict[str, Any]] = []
        self.start = time.perf_counter()
        self._tasks: dict[int, TaskID] = {}
        self._firsts: dict[int, tuple[int, float]] = {}
        self._count = 0

    def __call__(self, step: Step, image: Callable[[], torch.Tensor]) -> None:
        self._count += 1
        elapsed = time.perf_counter() - self.start
        record: dict[str, Any] = {
            "step": self._count,
            "scale": step.scale,
            "scale_step": step.step,
            "size": list(step.size),
            "elapsed_s": round(elapsed, 4),
            "losses": step.losses,
        }
        if step.event:
            record["event"] = step.event
        self.steps.append(record)
        if self.progress is not None:
            self._draw(step)
        if self.save_every and self.save_path is not None and self._count % self.save_every == 0:
            images.save(image(), self.save_path(self._count))

    def close(self) -> None:
        """Remove this image's bars (a batch draws the next image's in their place)."""
        if self.progress is not None:
            for task in self._tasks.values():
                self.progress.remove_task(task)
        self._tasks.clear()

    def _draw(self, step: Step) -> None:
        assert self.progress is not None
        if step.scale not in self._tasks:
            label = (
                f"scale {step.scale + 1}/{step.scales} {step.size[1]}x{step.size[0]}"
                if step.scales > 1
                else (f"{step.size[1]}x{step.size[0]}")
            )
            self._tasks[step.scale] = self.progress.add_task(label, total=step.steps, losses="", rate="")
        task = self._tasks[step.scale]
        # The Step's own clock: on a GPU events arrive in batches, each step's time spread over its batch.
        first_step, first_time = self._firsts.setdefault(step.scale, (step.step, step.elapsed_s))
        span = step.elapsed_s - first_time
        rate = (step.step - first_step) / span if span > 0 else 0.0
        self.progress.update(task, completed=step.step, losses=format_losses(step.losses), rate=f"{rate:.2f} it/s")


def make_progress(console: Console, transient: bool = False) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=16),
        MofNCompleteColumn(),
        TextColumn("[cyan]{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[losses]}"),
        console=console,
        transient=transient,
    )


def target_summary(records: list[TargetRecord]) -> dict[str, Any]:
    return {
        "records": [
            {
                "kind": r.kind,
                "size": list(r.size),
                "seconds": round(r.seconds, 5),
                "cache": r.cache,
                "forward": r.forward,
            }
            for r in records
        ],
        "seconds": round(sum(r.seconds for r in records), 5),
        "hits": sum(r.cache == "hit" for r in records),
        "memory_hits": sum(r.cache == "memory" for r in records),
        "misses": sum(r.cache == "miss" for r in records),
        "content_forward_passes": sum(r.forward for r in records if r.kind == "content"),
        "style_forward_passes": sum(r.forward for r in records if r.kind == "style"),
    }


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    write_atomic(path, (json.dumps(data, indent=2) + "\n").encode())
