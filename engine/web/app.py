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
- ``GET /api/jobs``; ``POST /api/jobs/{id}/stop``; ``GET /api/jobs/{id}/result.png``; ``GET /api/jobs/{id}/trace.json``.
- ``GET /api/events``: server-sent events: ``jobs`` (every job's state and queue position), ``step`` (the loss),
  ``preview`` (a JPEG of the image, at most every ``preview_every`` seconds), ``history`` (on connecting: the
  running job's losses so far), ``closing`` (the server is shutting down).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import typing
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from nst_engine.config import NAMED_INITS, ColorMode, StyleConfig
from nst_engine.device import choose_precision, resolve_device
from nst_engine.errors import ConfigError
from nst_engine.export.model_file import ModelInfo
from nst_engine.losses.registry import STYLE_LOSSES
from nst_engine.presets import PRESETS, build_config
from nst_engine.presets import preset as preset_values
from nst_engine.spec import ModelSpec
from nst_engine.web.guard import AllowedHosts, Guard, json_depth_ok
from nst_engine.web.jobs import Hub, JobQueue, QueueFull
from nst_engine.web.uploads import UploadRejected, Uploads

# Resolved: an editable install links each file, and StaticFiles serves no file through a link out of its folder.
STATIC = Path(__file__).resolve().parent / "static"
SAMPLE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")
#: The fields a job takes from the page, and their types; anything else in the body is refused.
JOB_FIELDS: dict[str, tuple[type, ...]] = {
    "content": (str,),
    "style": (str,),
    "size": (int,),
    "steps": (int,),
    "style_weight": (int, float),
    "preserve_colors": (str,),
    "style_loss": (str,),
    "content_weight": (int, float),
    "seed": (int,),
    "init": (str,),
    "scales": (int,),
    "preset": (str, type(None)),
}
#: How many coarse-to-fine scales a page's job may ask for.
MAX_PAGE_SCALES = 4


#: The settings the page has a field for.
PAGE_FIELDS = (
    "size",
    "steps",
    "style_weight",
    "preserve_colors",
    "style_loss",
    "content_weight",
    "seed",
    "init",
    "scales",
)


@dataclass
class ServerSettings:
    """What ``nst-engine serve`` was started with."""

    spec: ModelSpec  # --model, or --weights (each job's layers and pooling exported into the cache once)
    info: ModelInfo  # of the model opened at start-up, for the default settings
    samples: dict[str, Path] = field(default_factory=dict)  # name shown -> file
    max_size: int = 1024
    max_steps: int = 2000
    max_queued: int = 8
    max_upload_bytes: int = 32 << 20
    max_pixels: int = 8192 * 8192
    preview_every: float = 0.2
    max_history: int = 32  # finished jobs kept (results on disk); the oldest is dropped
    hosts: AllowedHosts = field(default_factory=lambda: AllowedHosts("127.0.0.1"))
    # The quick-start run's size and steps (a first picture in a minute on a CPU), the engine's own weights.
    defaults: dict[str, Any] = field(default_factory=lambda: page_defaults(StyleConfig()))


def page_defaults(config: StyleConfig) -> dict[str, Any]:
    fields = ("style_weight", "preserve_colors", "style_loss", "content_weight", "seed", "init", "scales")
    return {"size": 256, "steps": 100} | {name: getattr(config, name) for name in fields}


def samples_in(folder: Path | None) -> dict[str, Path]:
    """The images directly in ``folder``, by file name."""
    if folder is None:
        return {}
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in SAMPLE_SUFFIXES}


def create_app(settings: ServerSettings) -> FastAPI:
    hub = Hub()
    state: dict[str, Any] = {}
    closing = asyncio.Event()

    def queue() -> JobQueue:
        queue: JobQueue = state["queue"]
        return queue

    def uploads() -> Uploads:
        uploads: Uploads = state["uploads"]
        return uploads

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        folder = Path(tempfile.mkdtemp(prefix="nst-engine-serve-"))  # uploads and results: removed on shutdown
        state["folder"] = folder
        state["queue"] = JobQueue(settings.spec, hub, folder / "results", settings.max_queued,
                                  settings.preview_every, settings.max_history)  # fmt: skip
        state["uploads"] = Uploads(folder / "uploads", settings.max_pixels, in_use=state["queue"].uses)
        try:
            yield
        finally:
            await app.state.shutdown()

    app = FastAPI(title="nst-engine", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    def closing_soon() -> None:
        """The server is stopping (Ctrl-C): end every event stream and ask the running job to stop after its
        step. Returns at once (it may run in a signal handler); ``shutdown`` waits for the job."""
        closing.set()
        hub.publish({"type": "closing"})
        if "queue" in state:
            queue().begin_close()

    async def shutdown() -> None:
        """Stop the running job at a step boundary and wait for it; remove the uploads. Idempotent."""
        if "queue" not in state:
            return
        closing_soon()
        await asyncio.get_running_loop().run_in_executor(None, queue().close)
        uploads().close()
        shutil.rmtree(state["folder"], ignore_errors=True)

    app.state.shutdown = shutdown
    app.state.closing_soon = closing_soon
    app.state.queue = queue  # for the tests and the bench: the job queue and the uploads folder of a running app
    app.state.uploads_folder = lambda: uploads().folder
    app.add_middleware(Guard, hosts=settings.hosts, limit=settings.max_upload_bytes)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    @app.get("/api/info")
    async def info() -> dict[str, Any]:
        return {
            "weights": settings.info.weights_label,
            "precision": "{} ({})".format(*choose_precision(StyleConfig().precision, resolve_device("auto"))),
            "pretrained": settings.info.pretrained,
            "network": settings.info.network,
            "samples": list(settings.samples),
            # What each preset sets of the page's fields: the page fills them in when one is picked.
            "presets": {
                name: {k: v for k, v in values.items() if k in PAGE_FIELDS} for name, values in PRESETS.items()
            },
            "colors": list(typing.get_args(ColorMode)),
            "style_losses": {name: entry.help for name, entry in STYLE_LOSSES.items()},
            "inits": list(NAMED_INITS),
            "max_scales": MAX_PAGE_SCALES,
            "defaults": settings.defaults,
            "limits": {
                "max_size": settings.max_size,
                "max_steps": settings.max_steps,
                "max_queued": settings.max_queued,
                "max_upload_bytes": settings.max_upload_bytes,
            },
        }

    @app.get("/api/samples/{name}")
    async def sample(name: str) -> FileResponse:
        path = settings.samples.get(name)  # a name from the list, never a path from the request
        if path is None:
            raise HTTPException(404, f"no sample named {name!r}")
        return FileResponse(path)

    @app.post("/api/uploads")
    async def upload(file: UploadFile) -> dict[str, Any]:
        data = await file.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise HTTPException(413, f"the file is over this server's limit of {settings.max_upload_bytes >> 20} MiB")
        try:
            item = await asyncio.get_running_loop().run_in_executor(None, uploads().add, data, file.filename or "")
        except UploadRejected as exc:
            raise HTTPException(400, str(exc)) from None
        return {"id": item.id, "name": item.name, "width": item.width, "height": item.height}

    @app.get("/api/uploads/{upload_id}/thumbnail.jpg")
    async def thumbnail(upload_id: str) -> Response:
        item = uploads().get(upload_id)
        if item is None:
            raise HTTPException(404, "no such upload")
        return Response(item.thumbnail, media_type="image/jpeg")

    def source(value: str, what: str) -> tuple[Path, str]:
        kind, _, key = value.partition(":")
        if kind == "upload":
            item = uploads().get(key)
            if item is not None:
                return item.path, item.name
            raise HTTPException(400, f"{what}: no upload {key!r} on this server; upload the image again")
        if kind == "sample" and key in settings.samples:
            return settings.samples[key], key
        raise HTTPException(400, f"{what} must be upload:ID or sample:NAME (one of /api/info's samples)")

    @app.post("/api/jobs")
    async def submit(request: Request) -> JSONResponse:
        body = json_object(await request.body(), request.headers.get("content-type", ""))
        unknown = sorted(set(body) - set(JOB_FIELDS))
        if unknown:
            raise HTTPException(400, f"unknown field {unknown[0]!r}; the fields are {', '.join(JOB_FIELDS)}")
        for name, kinds in JOB_FIELDS.items():
            value = body.get(name)
            if name in body and (isinstance(value, bool) or not isinstance(value, kinds)):
                raise HTTPException(400, f"{name} must be {' or '.join(k.__name__ for k in kinds)}, not {value!r}")
        for name in ("content", "style"):
            if name not in body:
                raise HTTPException(400, f"{name} is missing: upload an image or pick a sample")
        if "init" in body and body["init"] not in NAMED_INITS:  # never a path: the page names no server file
            raise HTTPException(400, f"init must be one of {', '.join(NAMED_INITS)}, not {body['init']!r}")
        if "scales" in body and not 1 <= body["scales"] <= MAX_PAGE_SCALES:
            raise HTTPException(400, f"scales must be 1 to {MAX_PAGE_SCALES}, not {body['scales']}")
        content, content_name = source(body["content"], "content")
        style, style_name = source(body["style"], "style")
        preset = body.get("preset") or None
        try:
            # The page's defaults, then the preset, then the fields sent: the CLI's checks, word for word.
            sets = preset_values(preset) if preset else {}
            given = {k: v for k, v in settings.defaults.items() if k not in sets}
            config = build_config(preset, given | {k: body[k] for k in PAGE_FIELDS if k in body})
        except ConfigError as exc:
            raise HTTPException(400, _page_words(str(exc))) from None
        if config.size > settings.max_size:  # what the job will run at, a preset's size included
            raise HTTPException(400, f"size {config.size} is over this server's limit of {settings.max_size} px")
        if config.steps > settings.max_steps:
            raise HTTPException(400, f"steps {config.steps} is over this server's limit of {settings.max_steps}")
        if settings.spec.model is not None:  # a fixed model file: the job must fit it
            if config.pooling != settings.info.pooling:
                has = settings.info.pooling
                why = f"preset {preset} needs {config.pooling} pooling and this server's model has {has}"
                raise HTTPException(400, f"{why}; start the server with --weights instead of --model")
            try:
                settings.info.require(config.layers)
            except ConfigError as exc:
                raise HTTPException(400, f"{exc} (start the server with --weights instead of --model)") from None
        shown = {"content": content_name, "style": style_name, "preset": preset, "size": config.size,
                 "steps": config.steps, "style_weight": config.style_weight,
                 "preserve_colors": config.preserve_colors, "style_loss": config.style_loss,
                 "content_weight": config.content_weight, "seed": config.seed, "init": config.init,
                 "scales": len(config.scale_sizes())}  # fmt: skip
        try:
            job = queue().submit(config, content, style, shown, preset)
        except QueueFull as exc:
            raise HTTPException(429, str(exc)) from None
        return JSONResponse({"id": job.id, "position": queue().position(job)}, status_code=201)

    @app.get("/api/jobs")
    async def jobs() -> list[dict[str, Any]]:
        return queue().summaries()

    def job_or_404(job_id: str) -> Any:
        job = queue().jobs.get(job_id)
        if job is None:
            raise HTTPException(404, "no such job")
        return job

    @app.post("/api/jobs/{job_id}/stop")
    async def stop(job_id: str) -> dict[str, Any]:
        """Stop this job if it runs, cancel it if it waits: only the job named."""
        job_or_404(job_id)
        job = queue().stop(job_id)
        return {"id": job_id, "state": job.state if job else None}

    @app.delete("/api/jobs/{job_id}")
    async def delete(job_id: str) -> dict[str, Any]:
        job_or_404(job_id)
        if not queue().delete(job_id):
            raise HTTPException(409, "this job has not finished; stop it first")
        return {"id": job_id, "deleted": True}

    @app.get("/api/jobs/{job_id}/result.png")
    async def result(job_id: str) -> FileResponse:
        job = job_or_404(job_id)
        if job.result is None or not job.result.is_file():
            raise HTTPException(404, "this job has no image yet")
        return FileResponse(job.result, media_type="image/png", filename=f"nst-engine-{job.id}.png")

    @app.get("/api/jobs/{job_id}/trace.json")
    async def trace(job_id: str) -> FileResponse:
        job = job_or_404(job_id)
        if job.trace is None or not job.trace.is_file():
            raise HTTPException(404, "this job has no trace yet")
        return FileResponse(job.trace, media_type="application/json", filename=f"nst-engine-{job.id}.json")

    @app.get("/api/events")
    async def events(request: Request) -> StreamingResponse:
        async def stream() -> AsyncIterator[str]:
            inbox = hub.subscribe()
            try:
                yield _sse({"type": "jobs", "jobs": queue().summaries()})
                for job in queue().jobs.values():
                    if job.state == "running":  # a page opened mid-run gets its curve so far and latest image
                        yield _sse({"type": "history", "id": job.id, "losses": job.losses})
                        if job.preview is not None:
                            yield _sse(job.preview)
                while not closing.is_set():
                    try:
                        event = await asyncio.wait_for(inbox.get(), timeout=10.0)
                    except asyncio.TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    yield _sse(event)
                    if event["type"] == "closing":
                        return
            finally:
                hub.unsubscribe(inbox)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})  # fmt: skip

    return app


#: The largest JSON body a route takes, and how deep it may nest: a job's fields are flat.
MAX_JSON_BYTES = 64 << 10
MAX_JSON_DEPTH = 8


def json_object(data: bytes, content_type: str) -> dict[str, Any]:
    """A request body that must be a small, flat JSON object, or the HTTP error that says why not. JSON only: a
    form or text/plain body (which another site could send without asking) is 415."""
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise HTTPException(415, "send the job as JSON (Content-Type: application/json)")
    if len(data) > MAX_JSON_BYTES:
        raise HTTPException(413, f"the job's JSON is over {MAX_JSON_BYTES >> 10} KiB")
    if not json_depth_ok(data, MAX_JSON_DEPTH):
        raise HTTPException(400, f"the body nests deeper than {MAX_JSON_DEPTH} levels; send a flat JSON object")
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        raise HTTPException(400, "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "the body must be a JSON object")
    return body


def _sse(event: dict[str, Any]) -> str:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"


def _page_words(message: str) -> str:
    """A CLI message for the page: ``--style-weight`` becomes ``style weight``."""
    for flag in ("size", "steps", "style-weight", "preserve-colors", "preset"):
        message = message.replace(f"--{flag}", flag.replace("-", " "))
    return message
