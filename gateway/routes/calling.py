"""The response to a call: one JSON object, or Server-Sent Events of deltas then the call.

A quiet stream gets an SSE comment line (``: keep-alive``) every ``sse_keepalive`` seconds: clients
ignore comments, and proxies that cut idle connections see traffic.

sse-starlette was considered and left out: at import it patches uvicorn's exit handler and, by
default, ends every stream on SIGTERM, where a running call should finish (the shutdown grace).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ..calls import CallRun
from ..responses import CallView, ImageUrls, stream_events
from ..schemas import CallFormat, CallRequest, ImageUrlMode
from .context import Services, owner_of

__all__ = ["CALL_RESPONSES", "View", "call_view", "respond"]

# A call answers JSON, or Server-Sent Events when the request says "stream": true; both are documented.
CALL_RESPONSES: dict[int | str, dict[str, Any]] = {200: {
    "description": "The finished call, or (with stream) its deltas as Server-Sent Events",
    "content": {"application/json": {"schema": {"type": "object"}},
                "text/event-stream": {}}}}  # events carry JSON of several shapes, then [DONE]


def _event(name: str, data: Any) -> str:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def call_view(request: Request, owner: str, shape: CallFormat, image_url: ImageUrlMode) -> CallView:
    """How this request wants calls shown; Responses image URLs point back at this gateway."""
    services: Services = request.app.state.services
    # Only Responses items carry image URLs; building the base URL is a good part of a fast call's cost.
    base = str(request.base_url).rstrip("/") if shape == "responses" else ""
    return CallView(shape, ImageUrls(services.files, owner, base, inline=image_url == "data"))


async def _view_query(
        request: Request, owner: Annotated[str, Depends(owner_of)],
        shape: Annotated[CallFormat, Query(alias="format", description="run_step or responses")] = "run_step",
        image_url: Annotated[ImageUrlMode, Query(description="Responses images: gateway or data")] = "gateway",
) -> CallView:
    # async: a plain def dependency would hop to the threadpool on every request for microseconds of work.
    return call_view(request, owner, shape, image_url)


# The ?format= and ?image_url= of a route that returns calls.
View = Annotated[CallView, Depends(_view_query)]


async def respond(services: Services, run: CallRun, body: CallRequest, view: CallView) -> Response:
    if not body.stream:
        if body.background:  # the call runs on; GET .../calls/{id} follows it
            return JSONResponse(await view.call(run.body("in_progress")))
        return JSONResponse(await view.call(await services.calls.wait(run)))
    assert run.streamed, "start the call with stream=True, or its deltas are never queued"
    events = _events(services, run) if view.format == "run_step" else _item_events(services, run, view)
    return StreamingResponse(_kept_alive(events, services.sse_keepalive), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


KEEPALIVE = ": keep-alive\n\n"


async def _kept_alive(events: AsyncGenerator[str, None], interval: float) -> AsyncIterator[str]:
    """``events``, with a comment line whenever ``interval`` seconds pass without one (0: never)."""
    if interval <= 0:
        async for event in events:
            yield event
        return
    pending: asyncio.Future[str] | None = None
    try:
        while True:
            # The wait times out, never the step of ``events``: cancelling that would end the stream.
            pending = pending or asyncio.ensure_future(anext(events))
            done, _ = await asyncio.wait({pending}, timeout=interval)
            if not done:
                yield KEEPALIVE
                continue
            step, pending = pending, None
            try:
                event = step.result()
            except StopAsyncIteration:
                return
            yield event
    finally:
        # The client went away: stop the step under way, so ``events`` runs its own cleanup.
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
        await events.aclose()


async def _deltas(run: CallRun) -> AsyncIterator[dict[str, Any]]:
    while (delta := await run.deltas.get()) is not None:
        yield delta


async def _events(services: Services, run: CallRun) -> AsyncGenerator[str, None]:
    try:
        async for delta in _deltas(run):
            yield _event("code_interpreter.delta", delta)
        yield _event("code_interpreter.completed", await services.calls.wait(run))
        yield "data: [DONE]\n\n"
    finally:
        _hang_up(run)


async def _item_events(services: Services, run: CallRun, view: CallView) -> AsyncGenerator[str, None]:
    try:
        async for event in stream_events(_deltas(run), lambda: services.calls.wait(run), view.urls,
                                         run.container_id):
            yield _event(event["type"], event)
        yield "data: [DONE]\n\n"
    finally:
        _hang_up(run)


def _hang_up(run: CallRun) -> None:
    # The client went away before the end: interrupt the kernel, unless the call runs in the background.
    # The run still records the call.
    if run.task is not None and not run.task.done() and not run.background:
        run.stop.set()
