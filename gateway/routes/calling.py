"""The response to a call: one JSON object, or Server-Sent Events of deltas then the call."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import JSONResponse, Response, StreamingResponse

from ..calls import CallRun
from .context import Services

__all__ = ["CALL_RESPONSES", "respond"]

# A call answers JSON, or Server-Sent Events when the request says "stream": true; both are documented.
CALL_RESPONSES: dict[int | str, dict[str, Any]] = {200: {
    "description": "The finished call, or (with stream) its deltas as Server-Sent Events",
    "content": {"application/json": {"schema": {"type": "object"}},
                "text/event-stream": {}}}}  # events carry JSON of several shapes, then [DONE]


def _event(name: str, data: Any) -> str:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def respond(services: Services, run: CallRun, stream: bool) -> Response:
    if not stream:
        return JSONResponse(await services.calls.wait(run))
    assert run.streamed, "start the call with stream=True, or its deltas are never queued"
    return StreamingResponse(_events(services, run), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _events(services: Services, run: CallRun) -> AsyncIterator[str]:
    try:
        while (delta := await run.deltas.get()) is not None:
            yield _event("code_interpreter.delta", delta)
        yield _event("code_interpreter.completed", await services.calls.wait(run))
        yield "data: [DONE]\n\n"
    finally:
        # The client went away before the end: interrupt the kernel; the run still records the call.
        if run.task is not None and not run.task.done():
            run.stop.set()
