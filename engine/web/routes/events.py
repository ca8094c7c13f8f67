"""``GET /api/events``: server-sent events: ``jobs`` (every job's state and queue position), ``step`` (the loss),
``preview`` (a JPEG of the image, at most every ``preview_every`` seconds), ``history`` (on connecting: the running
job's losses so far), ``closing`` (the server is shutting down)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse

from nst_engine.web.settings import WebState, web_state

router = APIRouter()
State = Annotated[WebState, Depends(web_state)]
#: Seconds between keep-alive comments on a quiet stream.
KEEP_ALIVE = 10.0


@router.get("/api/events")
async def events(state: State) -> StreamingResponse:
    return StreamingResponse(stream(state), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})  # fmt: skip


async def stream(state: WebState) -> AsyncIterator[str]:
    inbox = state.hub.subscribe()
    try:
        yield sse({"type": "jobs", "jobs": state.queue.summaries()})
        for job in state.queue.jobs.values():
            if job.state == "running":  # a page opened mid-run gets its curve so far and latest image
                yield sse({"type": "history", "id": job.id, "losses": job.losses})
                if job.preview is not None:
                    yield sse(job.preview)
        while not state.closing.is_set():
            try:
                event = await asyncio.wait_for(inbox.get(), timeout=KEEP_ALIVE)
            except asyncio.TimeoutError:
                yield ": keep-alive\n\n"
                continue
            yield sse(event)
            if event["type"] == "closing":
                return
    finally:
        state.hub.unsubscribe(inbox)


def sse(event: dict[str, Any]) -> str:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
