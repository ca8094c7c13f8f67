"""What ``nst-engine stylize`` does once its options are parsed: open the model, then run each job, drawing
progress, writing outputs, traces and checkpoints, and summing up a batch."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.markup import escape
from rich.progress import Progress

import engine
from engine import images
from engine.api import Model, default_cache_dir, load_content, load_styles, open_model, target_source
from engine.batch import Job, check_writes, step_path
from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.cli import out
from engine.config import StyleConfig
from engine.errors import ConfigError, NumericalError, StyleTransferError
from engine.progress import StepReporter, make_progress, target_summary, write_json
from engine.signals import StopFlag, graceful_stop
from engine.stylize import StylizeResult, stylize
from engine.targets import TargetSource


@dataclass
class Request:
    config: StyleConfig
    jobs: list[Job]
    styles: list[Path]
    masks: list[Path] = field(default_factory=list)
    content_mask: Path | None = None
    model: Path | None = None
    weights: str = "vgg19"
    network: str | None = None
    input_convention: str | None = None
    provider: str = "auto"
    cache_dir: Path | None = None
    use_cache: bool = True
    trace: Path | None = None
    save_every: int = 0
    overwrite: bool = False
    resume: Path | None = None
    quiet: bool = False
    preset: str | None = None


@dataclass
class Outcome:
    job: Job
    status: str  # "done", "skipped", "failed", "interrupted"
    seconds: float = 0.0
    message: str = ""
    trace: dict[str, Any] = field(default_factory=dict)


def _load_mask(path: Path, config: StyleConfig) -> torch.Tensor:
    image = images.load(path, None, config.max_input_pixels)
    return image.mean(dim=1, keepdim=True)  # white = 1


def run_request(req: Request) -> int:
    """Run every job; returns the exit code (0 all good, 1 a job failed, 130 interrupted)."""
    if req.masks and len(req.masks) != len(req.styles):
        raise ConfigError(f"{len(req.masks)} --mask for {len(req.styles)} styles; give one --mask per --style")
    inputs = [j.content for j in req.jobs] + list(req.styles) + list(req.masks)
    inputs += [p for p in (req.content_mask, req.model) if p is not None]
    if req.config.init not in ("content", "random"):
        inputs.append(Path(req.config.init))
    check_writes(req.jobs, inputs, req.trace, req.overwrite, req.save_every, req.resume)
    todo = [j for j in req.jobs if req.overwrite or req.resume or not j.output.exists()]
    skipped = [Outcome(j, "skipped", message="exists (use --overwrite)") for j in req.jobs if j not in todo]
    if len(req.jobs) == 1 and skipped:
        raise ConfigError(f"'{req.jobs[0].output}' exists; pass --overwrite to replace it")
    batch = _Batch(req, todo)
    outcomes: list[Outcome] = list(skipped)
    progress = None if req.quiet else make_progress(out)
    with graceful_stop() as stop, progress or _Null():
        overall = (
            progress.add_task("images", total=len(todo), losses="", rate="") if progress and len(todo) > 1 else None
        )
        for job in todo:
            outcome = batch.run(job, stop, progress)
            outcomes.append(outcome)
            if progress is not None and overall is not None:
                progress.advance(overall)
            if outcome.status == "interrupted":
                break
    _write_trace(req, batch.model, batch.targets, outcomes)
    return _summarise(req, outcomes)


class _Batch:
    """What every job of a command shares: styles, masks, model, targets, torch network. Built once, so a
    batch computes its style targets once, and bad inputs fail before any optimisation starts."""

    def __init__(self, req: Request, todo: list[Job]) -> None:
        cfg = self.config = req.config
        self.req = req
        self.preloaded = {todo[0].content: load_content(todo[0].content, cfg)} if len(req.jobs) == 1 and todo else {}
        self.styles = load_styles(req.styles, cfg)
        self.masks = [_load_mask(m, cfg) for m in req.masks] or None
        self.keep = _load_mask(req.content_mask, cfg) if req.content_mask else None
        self.resume = load_checkpoint(req.resume, cfg) if req.resume else None
        self.init = None if cfg.init in ("content", "random") else images.load(cfg.init, None, cfg.max_input_pixels)
        self.model = open_model(
            cfg,
            model=req.model,
            weights=req.weights,
            provider=req.provider,
            cache_dir=req.cache_dir,
            on_export=lambda m: out.print(f"[dim]{escape(m)}[/]"),
            network=req.network,
            input_convention=req.input_convention,
        )
        _announce(self.model)
        self.targets = target_source(
            self.model, req.cache_dir, req.use_cache, lambda m: out.print(f"[yellow]warning:[/] {escape(m)}")
        )
        self.net = self.model.torch_module(cfg.layers)

    def run(self, job: Job, stop: StopFlag, progress: Progress | None) -> Outcome:
        req, cfg = self.req, self.config
        start, first_record = time.perf_counter(), len(self.targets.records)
        reporter = StepReporter(progress, req.save_every, lambda n: step_path(job.output, n))
        try:
            content = self.preloaded.pop(job.content, None)
            content = content if content is not None else load_content(job.content, cfg)
            result = stylize(
                content,
                self.styles,
                config=cfg,
                net=self.net,
                targets=self.targets,
                callback=reporter,
                init_image=self.init,
                style_masks=self.masks,
                content_mask=self.keep,
                resume=self.resume,
                should_stop=stop,
                sync_every=1 if req.save_every else None,  # an intermediate image must be that step's
            )
            images.save(result.image, job.output)
        except NumericalError as exc:
            if isinstance(exc.image, torch.Tensor):
                images.save(exc.image, job.output)
            return Outcome(job, "failed", time.perf_counter() - start, f"{exc} (last good image saved)")
        except StyleTransferError as exc:
            if len(req.jobs) == 1:
                raise
            out.print(f"[red]failed:[/] {escape(f'{job.content}: {exc}')}")
            return Outcome(job, "failed", time.perf_counter() - start, str(exc))
        finally:
            reporter.close()
        seconds = time.perf_counter() - start
        trace = _trace(req, job, self.targets.records[first_record:], reporter.steps, result, seconds)
        if result.interrupted:
            ckpt = save_checkpoint(job.output, result, cfg)
            out.print(
                f"[yellow]stopped[/] ({stop.signal_name or 'interrupt'}) after step {len(reporter.steps)}: "
                f"saved {job.output} and checkpoint {ckpt}; continue with --resume {ckpt}"
            )
            return Outcome(job, "interrupted", seconds, trace=trace)
        tally = target_summary(self.targets.records[first_record:])
        out.print(
            f"[dim]targets: {tally['hits'] + tally['memory_hits']} cached, {tally['misses']} computed "
            f"({tally['style_forward_passes']} style and {tally['content_forward_passes']} content passes, "
            f"{tally['seconds']:.2f}s)[/]"
        )
        last = reporter.steps[-1]["losses"] if reporter.steps else {}
        loss = f" (final loss {last['total']:.4g})" if last else ""
        out.print(f"[green]wrote[/] {escape(str(job.output))} in {seconds:.1f}s{loss}")
        return Outcome(job, "done", seconds, trace=trace)


def _announce(model: Model) -> None:
    out.print(f"[dim]{escape(model.encoder.choice.describe())}[/]", soft_wrap=True)
    if not model.info.pretrained:
        out.print(f"[yellow]weights: {escape(model.info.weights_label)}[/]", soft_wrap=True)
    else:
        out.print(f"[dim]weights: {escape(model.info.weights_label)}[/]")


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


def _trace(
    req: Request,
    job: Job,
    records: list[Any],
    steps: list[dict[str, Any]],
    result: StylizeResult,
    seconds: float,
) -> dict[str, Any]:
    return {
        "content": str(job.content),
        "output": str(job.output),
        "styles": [str(s) for s in req.styles],
        "settings": req.config.to_dict(),
        "preset": req.preset,
        "targets": target_summary(records),
        "steps": steps,
        "result": {
            "interrupted": result.interrupted,
            "recoveries": result.recoveries,
            "seconds": round(seconds, 3),
            "size": list(result.image.shape[-2:]),
        },
    }


def _write_trace(req: Request, model: Model, targets: TargetSource, outcomes: list[Outcome]) -> None:
    if req.trace is None:
        return
    runs = [
        o.trace | {"status": o.status}
        if o.trace
        else {"content": str(o.job.content), "status": o.status, "message": o.message}
        for o in outcomes
    ]
    data: dict[str, Any] = {
        "engine_version": engine.__version__,
        "weights": {
            "source": model.info.weights,
            "label": model.info.weights_label,
            "pretrained": model.info.pretrained,
            "sha256": model.info.meta.get("weights_sha256"),
            "network": model.info.network,
            "input_convention": model.info.convention,
            "feature_scale": model.info.feature_scale,
        },
        "model": {
            "path": str(model.info.path),
            "sha256": model.info.sha256,
            "provider": model.provider,
            "precision": model.precision,
            "provider_note": model.encoder.choice.describe(),
        },
        "device": str(req.config.device),
        "cache": "off" if not req.use_cache else str(req.cache_dir or default_cache_dir()),
        "targets": target_summary(targets.records),
    }
    if len(req.jobs) == 1 and runs and "steps" in runs[0]:
        data.update(runs[0])
    else:
        data.update(batch=True, runs=runs)
    write_json(req.trace, data)


def _summarise(req: Request, outcomes: list[Outcome]) -> int:
    done = [o for o in outcomes if o.status == "done"]
    failed = [o for o in outcomes if o.status == "failed"]
    if len(req.jobs) > 1:
        per = sum(o.seconds for o in done) / len(done) if done else 0.0
        out.print(
            f"[bold]summary:[/] {len(done)} done, {sum(o.status == 'skipped' for o in outcomes)} skipped, "
            f"{len(failed)} failed, {per:.1f} s per image"
        )
        for o in failed:
            out.print(f"  [red]failed[/] {escape(f'{o.job.content}: {o.message}')}")
    elif failed:
        out.print(f"[bold red]error:[/] {escape(failed[0].message)}")
    if any(o.status == "interrupted" for o in outcomes):
        return 130
    return 1 if failed else 0
