"""CLI options built from StyleConfig's field declarations: name, type, help, group and default each come from
the one declaration in ``engine.config``, and every value is checked there too."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from engine.config import StyleConfig, choices, option_name, settings
from engine.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])
DEFAULTS = StyleConfig()


def _shown_default(name: str) -> str:
    _, spec, _ = settings()[name]
    if spec.shown_default is not None:
        return spec.shown_default
    value = getattr(DEFAULTS, name)
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
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
        flags = (f"{flag}/--no-{flag[2:]}",)
        return bool | None, typer.Option(*flags, help=help_text, rich_help_panel=spec.group, show_default=False)
    cli_type: Any = {int: int, float: float}.get(base, str)
    allowed = choices(kind)
    if allowed and not all(c in spec.help for c in allowed):
        help_text = f"{spec.help} One of: {', '.join(allowed)}. \\[default: {_shown_default(name)}]"
    return cli_type | None, typer.Option(flag, help=help_text, rich_help_panel=spec.group, show_default=False)


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
