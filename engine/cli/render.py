"""How the CLI shows a session's events: progress bars on a terminal, a plain line every few seconds in a pipe
(a log file, CI, a cluster job), or no step lines at all with ``--quiet``. Nothing here changes what runs."""

from __future__ import annotations

import time
from typing import Any, Literal, Self

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Column

from nst_engine.events import Event, ImageDone, ImageFailed, ImageSkipped, ImageStarted, Note, ScaleStarted, StepDone
from nst_engine.optim.loop import Step
from nst_engine.video import FrameDone

SHOWN_TERMS = ("content", "style", "tv", "temporal", "total")
#: A pipe gets a step line at most this often (and always for a scale's first and last step).
PLAIN_EVERY_S = 5.0
Mode = Literal["bars", "plain", "quiet"]


def format_losses(losses: dict[str, float]) -> str:
    return " ".join(f"{k} {losses[k]:.3g}" for k in SHOWN_TERMS if k in losses)


def _seconds(value: float) -> str:
    value = max(0.0, value)
    return f"{value:.0f}s" if value < 90 else f"{value / 60:.1f}min"


class _Rate:
    """Steps per second within one scale, from the Steps' own clock (on a GPU they arrive in batches)."""

    def __init__(self) -> None:
        self.first: tuple[int, float] | None = None

    def __call__(self, step: Step) -> float:
        if self.first is None:
            self.first = (step.step, step.elapsed_s)
        first_step, first_time = self.first
        span = step.elapsed_s - first_time
        return (step.step - first_step) / span if span > 0 else 0.0


class Renderer:
    """A session listener that writes to ``console`` in one of three modes (see the module docstring)."""

    def __init__(self, console: Console, mode: Mode, every_s: float = PLAIN_EVERY_S) -> None:
        self.console, self.mode, self.every_s = console, mode, every_s
        self.progress: Progress | None = None
        self.tasks: dict[int, TaskID] = {}
        self.overall: TaskID | None = None
        self.rate = _Rate()
        self.last_line = 0.0
        self.scale: ScaleStarted | None = None
        self.count = 1

    def __enter__(self) -> Self:
        if self.mode == "bars":
            # Count, rate and ETA first: on a narrow terminal the losses are what gets cut, never the count.
            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(bar_width=12),
                MofNCompleteColumn(),
                TextColumn("[cyan]{task.fields[rate]}"),
                TextColumn("ETA"),
                TimeRemainingColumn(compact=True),
                TextColumn("{task.fields[losses]}", table_column=Column(overflow="ellipsis", no_wrap=True)),
                console=self.console,
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, event: Event) -> None:
        if isinstance(event, Note):
            style = "yellow" if event.level == "warning" else "dim"
            self.console.print(f"[{style}]{escape(event.text)}[/]", soft_wrap=True)
        elif isinstance(event, ImageStarted):
            self._image_started(event)
        elif isinstance(event, ScaleStarted):
            self._scale_started(event)
        elif isinstance(event, StepDone):
            self._step(event.step)
        elif isinstance(event, ImageDone):
            self._image_done(event)
        elif isinstance(event, ImageFailed):
            if self.progress is not None:
                self.progress.stop()
            if self.count > 1:  # one image's failure is the command's error line
                self.console.print(f"[red]failed:[/] {escape(f'{event.content}: {event.message}')}")
        elif isinstance(event, ImageSkipped) and self.mode != "quiet":
            self.console.print(f"[dim]skipped {escape(str(event.output))}: {escape(event.reason)}[/]", soft_wrap=True)

    def _image_started(self, event: ImageStarted) -> None:
        self.count = event.count
        if self.progress is not None:
            self._clear_bars()
            self.progress.start()
        if event.count > 1 and self.progress is not None and self.overall is None:
            self.overall = self.progress.add_task("images", total=event.count, losses="", rate="")
        if event.count > 1 and self.mode == "plain":
            self.console.print(f"image {event.index + 1}/{event.count}: {escape(event.content)}")

    def _scale_started(self, event: ScaleStarted) -> None:
        self.scale, self.rate, self.last_line = event, _Rate(), 0.0
        h, w = event.size
        if event.tiles:
            self.console.print(
                f"[dim]tiling {w}x{h}: {event.tiles} tiles of {event.tile} px with a {event.halo} px halo, "
                f"estimated peak {event.peak_bytes / 2**30:.1f} GiB, {event.history} L-BFGS pairs[/]"
            )
        label = f"scale {event.scale + 1}/{event.scales} {w}x{h}" if event.scales > 1 else f"{w}x{h}"
        if self.progress is not None:
            self.tasks[event.scale] = self.progress.add_task(label, total=event.steps, losses="", rate="")
        elif self.mode == "plain":
            self.console.print(f"{label}: {event.steps} steps")

    def _step(self, step: Step) -> None:
        rate = self.rate(step)
        if self.progress is not None and step.scale in self.tasks:
            narrow = self.console.width < 110
            losses = format_losses(
                {"total": step.losses["total"]} if narrow and "total" in step.losses else step.losses
            )
            task = self.tasks[step.scale]
            self.progress.update(task, completed=step.step, losses=losses, rate=f"{rate:.2f} it/s")
            return
        if self.mode != "plain":
            return
        now = time.monotonic()
        edge = step.step in (1, step.steps)
        if not edge and now - self.last_line < self.every_s:
            return
        self.last_line = now
        where = f" (scale {step.scale + 1}/{step.scales})" if step.scales > 1 else ""
        speed = f"{rate:.2f} it/s" if rate > 0 else "-- it/s"
        eta = f"  ETA {_seconds((step.steps - step.step) / rate)}" if rate > 0 else ""
        note = f"  [{step.event}]" if step.event else ""
        self.console.print(
            f"step {step.step}/{step.steps}{where}  {format_losses(step.losses)}  {speed}{eta}{note}",
            soft_wrap=True,
            highlight=False,
        )

    def _clear_bars(self) -> None:
        if self.progress is not None:
            for task in self.tasks.values():
                self.progress.remove_task(task)
        self.tasks.clear()

    def _image_done(self, event: ImageDone) -> None:
        if self.progress is not None:
            if self.overall is not None:
                self.progress.advance(self.overall)
            self.progress.refresh()
            self.progress.stop()  # the bars stay as they ended (N/N), above the lines that follow
        if event.status == "interrupted":
            where = f"saved {event.output} and checkpoint {event.checkpoint}; continue with --resume {event.checkpoint}"
            self.console.print(
                f"[yellow]stopped[/] ({escape(event.stop_reason or 'interrupt')}) after step {event.steps}: "
                f"{escape(where)}"
            )
            return
        t = event.targets
        self.console.print(
            f"[dim]targets: {t['hits'] + t['memory_hits']} cached, {t['misses']} computed "
            f"({t['style_forward_passes']} style and {t['content_forward_passes']} content passes, "
            f"{t['seconds']:.2f}s)[/]"
        )
        loss = f" (final loss {event.losses['total']:.4g})" if "total" in event.losses else ""
        self.console.print(f"[green]wrote[/] {escape(str(event.output))} in {event.seconds:.1f}s{loss}")


class FrameRenderer(Renderer):
    """The stylize renderer with frames for images: one bar over the clip, one over the current frame's steps."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.resumed = 0

    def __call__(self, event: Event) -> None:
        if isinstance(event, ImageStarted):
            self.count = event.count
            if self.progress is not None:
                self._clear_bars()
                self.progress.start()
                if self.overall is None:
                    self.overall = self.progress.add_task("frames", total=event.count, losses="", rate="")
                    self.progress.update(self.overall, completed=event.index)
            return
        if isinstance(event, ImageDone):
            return  # a frame is reported once it is on disk (frame_done)
        super().__call__(event)

    def frame_done(self, done: FrameDone) -> None:
        if done.resumed:
            self.resumed += 1
        if self.progress is not None:
            if self.overall is None:
                self.overall = self.progress.add_task("frames", total=done.count, losses="", rate="")
            self.progress.update(self.overall, completed=done.index + 1)
        elif self.mode == "plain" and not done.resumed:
            losses = f" (loss {done.losses['total']:.4g})" if "total" in done.losses else ""
            self.console.print(f"frame {done.index + 1}/{done.count} in {done.seconds:.1f}s{losses}", highlight=False)
