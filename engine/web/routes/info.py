"""``GET /`` (the page), ``GET /api/info`` (weights, samples, presets, limits, defaults) and the samples."""

from __future__ import annotations

import typing
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import FileResponse

from nst_engine.config import NAMED_INITS, ColorMode, StyleConfig
from nst_engine.device import choose_precision, resolve_device
from nst_engine.losses.registry import STYLE_LOSSES
from nst_engine.presets import PRESETS
from nst_engine.web.settings import MAX_PAGE_SCALES, PAGE_FIELDS, STATIC, WebState, web_state

router = APIRouter()
State = Annotated[WebState, Depends(web_state)]


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})


@router.get("/api/info")
async def info(state: State) -> dict[str, Any]:
    settings = state.settings
    return {
        "weights": settings.info.weights_label,
        "precision": "{} ({})".format(*choose_precision(StyleConfig().precision, resolve_device("auto"))),
        "pretrained": settings.info.pretrained,
        "network": settings.info.network,
        "samples": list(settings.samples),
        # What each preset sets of the page's fields: the page fills them in when one is picked.
        "presets": {name: {k: v for k, v in values.items() if k in PAGE_FIELDS} for name, values in PRESETS.items()},
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


@router.get("/api/samples/{name}")
async def sample(name: str, state: State) -> FileResponse:
    path = state.settings.samples.get(name)  # a name from the list, never a path from the request
    if path is None:
        raise HTTPException(404, f"no sample named {name!r}")
    return FileResponse(path)
