"""The web page's server: a FastAPI app on the same session, cache and checks as the CLI.

Routes (all JSON unless said):

- ``GET /``: the page (plain HTML, CSS and one script, all served from this package; nothing from the internet).
- ``GET /api/info``: the weights in use (and whether they are random), samples, presets, limits, defaults.
- ``GET /api/samples/{name}``: a sample image, by a name from ``/api/info`` only.
- ``POST /api/uploads``: one image (multipart ``file``), checked like a CLI input; its id and size.
- ``GET /api/uploads/{id}/thumbnail.jpg``: its thumbnail, re-encoded by the server.
- ``POST /api/jobs``: ``{content, style, size, steps, style_weight, preserve_colors, style_loss, content_weight,
  seed, init, scales, preset}`` (init: content, random or mean, never a path), where
  content and style are ``upload:ID`` or ``sample:NAME``; the job's id and queue position.
- ``GET /api/jobs``; ``POST /api/jobs/{id}/stop``; ``DELETE /api/jobs/{id}``; ``GET /api/jobs/{id}/result.png``;
  ``GET /api/jobs/{id}/trace.json``.
- ``GET /api/events``: server-sent events: ``jobs`` (every job's state and queue position), ``step`` (the loss),
  ``preview`` (a JPEG of the image, at most every ``preview_every`` seconds), ``history`` (on connecting: the
  running job's losses so far), ``closing`` (the server is shutting down).

Each resource's routes are a module of ``engine.web.routes``; this module makes the app, its start-up and shutdown.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from nst_engine.web.guard import Guard
from nst_engine.web.jobs import JobQueue
from nst_engine.web.routes import events, info, jobs, uploads
from nst_engine.web.settings import (
    MAX_PAGE_SCALES,
    PAGE_FIELDS,
    STATIC,
    ServerSettings,
    WebState,
    page_defaults,
    samples_in,
)
from nst_engine.web.uploads import Uploads

__all__ = ["MAX_PAGE_SCALES", "PAGE_FIELDS", "STATIC", "ServerSettings", "create_app", "page_defaults", "samples_in"]


def create_app(settings: ServerSettings) -> FastAPI:
    """The app: its routes, the Host/Origin/size guard, the static files, and a lifespan that makes the job queue
    and the uploads in a temporary folder, and removes them on shutdown."""
    state = WebState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.folder = Path(tempfile.mkdtemp(prefix="nst-engine-serve-"))  # uploads and results
        queue = JobQueue(settings.spec, state.hub, state.folder / "results", settings.max_queued,
                         settings.preview_every, settings.max_history)  # fmt: skip
        state.running = (queue, Uploads(state.folder / "uploads", settings.max_pixels, in_use=queue.uses))
        try:
            yield
        finally:
            await shutdown(state)

    app = FastAPI(title="nst-engine", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.web = state
    app.state.shutdown = lambda: shutdown(state)
    app.state.closing_soon = lambda: closing_soon(state)
    app.state.queue = lambda: state.queue  # for the tests and the bench: a running app's queue and uploads
    app.state.uploads_folder = lambda: state.uploads.folder
    app.add_middleware(Guard, hosts=settings.hosts, limit=settings.max_upload_bytes)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for module in (info, uploads, jobs, events):
        app.include_router(module.router)
    return app


def closing_soon(state: WebState) -> None:
    """The server is stopping (Ctrl-C): end every event stream and ask the running job to stop after its step.
    Returns at once (it may run in a signal handler); ``shutdown`` waits for the job."""
    state.closing.set()
    state.hub.publish({"type": "closing"})
    if state.running is not None:
        state.queue.begin_close()


async def shutdown(state: WebState) -> None:
    """Stop the running job at a step boundary and wait for it; remove the uploads. Idempotent."""
    if state.running is None:
        return
    closing_soon(state)
    await asyncio.get_running_loop().run_in_executor(None, state.queue.close)
    state.uploads.close()
    if state.folder is not None:
        shutil.rmtree(state.folder, ignore_errors=True)
