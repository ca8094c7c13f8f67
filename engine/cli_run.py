"""What ``nst-engine stylize`` does once its options are parsed: open the model, then run each job, drawing
progress, writing outputs, traces and checkpoints, and summing up a batch."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.markup import escape

import engine
from engine import images
from engine.api import Model, default_cache_dir, load_inputs, open_model, target_source
from engine.batch import Job
from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.cli import out
from engine.config import StyleConfig
from engine.errors import ConfigError, NumericalError, StyleTransferError
from engine.progress import StepReporter, make_progress, target_summary, write_json
from engine.signals import StopFlag, graceful_stop
from engine.stylize import StylizeResult, stylize
from engine.targets import TargetSource
from engine.vgg import VGGFeatures


@dataclass
class Request:
    config: StyleConfig
    jobs: list[Job]
    styles: list[Path]
    masks: list[Path] = field(default_factory=list)
    content_mask: Path | None = None
    model: Path | None = None
    weights: str = "vgg19"
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
    cfg = req.config
    if req.masks and len(req.masks) != len(req.styles):
        raise ConfigError(f"{len(req.masks)} --mask for {len(req.styles)} styles; give one --mask per --style")
    todo = [j for j in req.jobs if req.overwrite or req.resume or not j.output.exists()]
    skipped = [Outcome(j, "skipped", message="exists (use --overwrite)") for j in req.jobs if j not in todo]
    if len(req.jobs) == 1 and skipped:
        raise ConfigError(f"'{req.jobs[0].output}' exists; pass --overwrite to replace it")
    # Check the style images, masks and model before any long work starts.
    _, style_ts = load_inputs(req.styles[0], req.styles, cfg)
    masks = [_load_mask(m, cfg) for m in req.masks] or None
    keep = _load_mask(req.content_mask, cfg) if req.content_mask else None
    resume = load_checkpoint(req.resume, cfg) if req.resume else None
    model = open_model(
        cfg,
        model=req.model,
        weights=req.weights,
        provider=req.provider,
        cache_dir=req.cache_dir,
        on_export=lambda m: out.print(f"[dim]{m}[/]"),
    )
    _announce(model, cfg)
    warn = lambda m: out.print(f"[yellow]warning:[/] {escape(m)}")  # noqa: E731
    targets = target_source(model, req.cache_dir, req.use_cache, warn)
    net = model.torch_module(cfg.layers)
    outcomes: list[Outcome] = list(skipped)
    with graceful_stop() as stop:
        for number, job in enumerate(todo, 1):
            if len(todo) > 1:
                out.print(f"[bold]image {number}/{len(todo)}[/] {job.content} -> {job.output}")
            outcome = _run_job(req, job, style_ts, masks, keep, resume, model, targets, net, stop)
            outcomes.append(outcome)
            if outcome.status == "interrupted":
                break
    _write_trace(req, model, targets, outcomes)
    return _summarise(req, outcomes)


def _announce(model: Model, cfg: StyleConfig) -> None:
    out.print(f"[dim]{escape(model.encoder.choice.describe())}[/]", soft_wrap=True)
    if not model.info.pretrained:
        out.print(f"[yellow]weights: {escape(model.info.weights_label)}[/]", soft_wrap=True)
    else:
        out.print(f"[dim]weights: {escape(model.info.weights_label)}[/]")


def _run_job(
    req: Request,
    job: Job,
    style_ts: list[torch.Tensor],
    masks: list[torch.Tensor] | None,
    keep: torch.Tensor | None,
    resume: dict[str, Any] | None,
    model: Model,
    targets: TargetSource,
    net: VGGFeatures,
    stop: StopFlag,
) -> Outcome:
    cfg, start, first_record = req.config, time.perf_counter(), len(targets.records)
    try:
        content, _ = load_inputs(job.content, [], cfg)
        init_image = None
        if cfg.init not in ("content", "random"):
            init_image = images.load(cfg.init, None, cfg.max_input_pixels)
        progress = None if req.quiet else make_progress(out)
        stem = job.output.with_suffix("")
        reporter = StepReporter(
            progress, req.save_every, lambda n: stem.with_name(f"{stem.name}.step{n}{job.output.suffix}")
        )
        with progress or _Null():
            result = stylize(
                content,
                style_ts,
                config=cfg,
                net=net,
                targets=targets,
                callback=reporter,
                init_image=init_image,
                style_masks=masks,
                content_mask=keep,
                resume=resume,
                should_stop=stop,
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
    seconds = time.perf_counter() - start
    trace = _trace(req, job, model, targets.records[first_record:], reporter.steps, result, seconds)
    if result.interrupted:
        ckpt = save_checkpoint(job.output, result, cfg)
        out.print(
            f"[yellow]stopped[/] ({stop.signal_name or 'interrupt'}) at step {len(reporter.steps)}: saved "
            f"{job.output} and checkpoint {ckpt}; continue with --resume {ckpt}"
        )
        return Outcome(job, "interrupted", seconds, trace=trace)
    last = reporter.steps[-1]["losses"] if reporter.steps else {}
    out.print(
        f"[green]wrote[/] {job.output} in {seconds:.1f}s" + (f" (final loss {last['total']:.4g})" if last else "")
    )
    return Outcome(job, "done", seconds, trace=trace)


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


def _trace(
    req: Request,
    job: Job,
    model: Model,
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
