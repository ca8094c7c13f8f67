"""``POST /api/uploads`` (one image, checked like a CLI input) and each upload's thumbnail."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, UploadFile
from fastapi.responses import Response

from nst_engine.web.settings import WebState, web_state
from nst_engine.web.uploads import UploadRejected

router = APIRouter()
State = Annotated[WebState, Depends(web_state)]


@router.post("/api/uploads")
async def upload(file: UploadFile, state: State) -> dict[str, Any]:
    limit = state.settings.max_upload_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, f"the file is over this server's limit of {limit >> 20} MiB")
    try:
        item = await asyncio.get_running_loop().run_in_executor(None, state.uploads.add, data, file.filename or "")
    except UploadRejected as exc:
        raise HTTPException(400, str(exc)) from None
    return {"id": item.id, "name": item.name, "width": item.width, "height": item.height}


@router.get("/api/uploads/{upload_id}/thumbnail.jpg")
async def thumbnail(upload_id: str, state: State) -> Response:
    item = state.uploads.get(upload_id)
    if item is None:
        raise HTTPException(404, "no such upload")
    return Response(item.thumbnail, media_type="image/jpeg")
