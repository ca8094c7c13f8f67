"""``POST /api/jobs`` (a job from the page's fields, checked as the CLI checks them), the job list, and each job's
stop, delete, result and trace."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse

from nst_engine.config import NAMED_INITS, StyleConfig
from nst_engine.errors import ConfigError
from nst_engine.presets import build_config
from nst_engine.presets import preset as preset_values
from nst_engine.web.guard import json_depth_ok
from nst_engine.web.jobs import QueueFull, WebJob
from nst_engine.web.settings import MAX_PAGE_SCALES, PAGE_FIELDS, ServerSettings, WebState, web_state

router = APIRouter()
State = Annotated[WebState, Depends(web_state)]

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
    "style2": (str, type(None)),  # a second painting: blended with the first, or placed by region_mask
    "blend": (int, float),  # the second painting's share, between 0 and 1
    "region_mask": (str, type(None)),  # white where the second painting goes, black where the first does
    "keep_mask": (str, type(None)),  # white where the photo is kept unstylized
}
#: The largest JSON body a route takes, and how deep it may nest: a job's fields are flat.
MAX_JSON_BYTES = 64 << 10
MAX_JSON_DEPTH = 8


@router.post("/api/jobs")
async def submit(request: Request, state: State) -> JSONResponse:
    body = json_object(await request.body(), request.headers.get("content-type", ""))
    check_fields(body)
    content, content_name = _source(state, body["content"], "content")
    styles, names = zip(*(_source(state, body[k], k) for k in ("style", "style2") if body.get(k)), strict=True)
    region = _source(state, body["region_mask"], "region_mask") if body.get("region_mask") else None
    keep = _source(state, body["keep_mask"], "keep_mask") if body.get("keep_mask") else None
    preset = body.get("preset") or None
    config = _config(state.settings, body, preset)
    shown = {"content": content_name, "style": " + ".join(names), "preset": preset, "size": config.size,
             "steps": config.final_steps, "style_weight": config.style_weight,
             "preserve_colors": config.preserve_colors, "style_loss": config.style_loss,
             "content_weight": config.content_weight, "seed": config.seed, "init": config.init,
             "scales": len(config.scale_sizes()), "blend": config.style_blend_weights,
             "region_mask": region and region[1], "keep_mask": keep and keep[1]}  # fmt: skip
    try:
        job = state.queue.submit(config, content, styles, shown, preset, region and region[0], keep and keep[0])
    except QueueFull as exc:
        raise HTTPException(429, str(exc)) from None
    return JSONResponse({"id": job.id, "position": state.queue.position(job)}, status_code=201)


@router.get("/api/jobs")
async def jobs(state: State) -> list[dict[str, Any]]:
    return state.queue.summaries()


@router.post("/api/jobs/{job_id}/stop")
async def stop(job_id: str, state: State) -> dict[str, Any]:
    """Stop this job if it runs, cancel it if it waits: only the job named."""
    _job_or_404(state, job_id)
    job = state.queue.stop(job_id)
    return {"id": job_id, "state": job.state if job else None}


@router.delete("/api/jobs/{job_id}")
async def delete(job_id: str, state: State) -> dict[str, Any]:
    _job_or_404(state, job_id)
    if not state.queue.delete(job_id):
        raise HTTPException(409, "this job has not finished; stop it first")
    return {"id": job_id, "deleted": True}


@router.get("/api/jobs/{job_id}/result.png")
async def result(job_id: str, state: State) -> FileResponse:
    job = _job_or_404(state, job_id)
    if job.result is None or not job.result.is_file():
        raise HTTPException(404, "this job has no image yet")
    return FileResponse(job.result, media_type="image/png", filename=f"nst-engine-{job.id}.png")


@router.get("/api/jobs/{job_id}/trace.json")
async def trace(job_id: str, state: State) -> FileResponse:
    job = _job_or_404(state, job_id)
    if job.trace is None or not job.trace.is_file():
        raise HTTPException(404, "this job has no trace yet")
    return FileResponse(job.trace, media_type="application/json", filename=f"nst-engine-{job.id}.json")


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


def check_fields(body: dict[str, Any]) -> None:
    """Every field known and of its type, content and style given, init a name and scales in range."""
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
    if "blend" in body and not 0 < body["blend"] < 1:
        raise HTTPException(400, f"blend is the second style's share: between 0 and 1, not {body['blend']}")
    for name in ("blend", "region_mask"):
        if body.get(name) is not None and not body.get("style2"):
            raise HTTPException(400, f"{name} needs style2: pick a second style painting, or leave {name} out")


def _source(state: WebState, value: str, what: str) -> tuple[Path, str]:
    """The file an ``upload:ID`` or ``sample:NAME`` names: never a path from the request."""
    kind, _, key = value.partition(":")
    if kind == "upload":
        item = state.uploads.get(key)
        if item is not None:
            return item.path, item.name
        raise HTTPException(400, f"{what}: no upload {key!r} on this server; upload the image again")
    if kind == "sample" and key in state.settings.samples:
        return state.settings.samples[key], key
    raise HTTPException(400, f"{what} must be upload:ID or sample:NAME (one of /api/info's samples)")


def _config(settings: ServerSettings, body: dict[str, Any], preset: str | None) -> StyleConfig:
    """The page's defaults, then the preset, then the fields sent, through the CLI's checks word for word; then
    this server's limits, and what a fixed model file can do."""
    try:
        sets = preset_values(preset) if preset else {}
        given = {k: v for k, v in settings.defaults.items() if k not in sets}
        given |= {k: body[k] for k in PAGE_FIELDS if k in body}
        if body.get("style2") and not body.get("region_mask"):  # blended; a region mask places them instead
            share = float(body.get("blend", 0.5))
            given["style_blend_weights"] = (1.0 - share, share)
        config = build_config(preset, given)
    except ConfigError as exc:
        raise HTTPException(400, _page_words(str(exc))) from None
    if config.size > settings.max_size:  # what the job will run at, a preset's size included
        raise HTTPException(400, f"size {config.size} is over this server's limit of {settings.max_size} px")
    if config.final_steps > settings.max_steps:
        raise HTTPException(400, f"steps {config.final_steps} is over this server's limit of {settings.max_steps}")
    if settings.spec.model is not None:  # a fixed model file: the job must fit it
        if config.pooling != settings.info.pooling:
            has = settings.info.pooling
            why = f"preset {preset} needs {config.pooling} pooling and this server's model has {has}"
            raise HTTPException(400, f"{why}; start the server with --weights instead of --model")
        try:
            settings.info.require(config.layers)
        except ConfigError as exc:
            raise HTTPException(400, f"{exc} (start the server with --weights instead of --model)") from None
    return config


def _job_or_404(state: WebState, job_id: str) -> WebJob:
    job = state.queue.jobs.get(job_id)
    if job is None:
        raise HTTPException(404, "no such job")
    return job


def _page_words(message: str) -> str:
    """A CLI message for the page: ``--style-weight`` becomes ``style weight``."""
    for flag in ("size", "steps", "style-weight", "preserve-colors", "preset"):
        message = message.replace(f"--{flag}", flag.replace("-", " "))
    return message
