"""``nst-engine cache info`` and ``nst-engine cache clear``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nst_engine.cache_folder import clear_folder, folder_info
from nst_engine.cli.app import app, handled
from nst_engine.spec import default_cache_dir

cache_app = typer.Typer(help="Inspect or empty the on-disk cache of targets and exported models.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")
CacheDirOpt = Annotated[
    Path | None, typer.Option(help="Cache folder \\[default: $NST_ENGINE_CACHE or the user cache dir].")
]


@cache_app.command("info")
@handled
def cache_info(cache_dir: CacheDirOpt = None) -> None:
    """Where the cache is, how many entries it holds and how large it is."""
    info = folder_info(cache_dir or default_cache_dir())
    typer.echo(
        f"location: {info.root}\ntargets:  {info.targets}\nmodels:   {info.models}\nsize:     {info.bytes / 1e6:.1f} MB"
    )


@cache_app.command("clear")
@handled
def cache_clear(cache_dir: CacheDirOpt = None) -> None:
    """Delete every cached target and exported model."""
    before = clear_folder(cache_dir or default_cache_dir())
    typer.echo(
        f"removed {before.targets} targets and {before.models} models ({before.bytes / 1e6:.1f} MB) from {before.root}"
    )
