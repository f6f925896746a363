"""create_app: the FastAPI app over services it is handed. It builds nothing itself."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, Protocol

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ERROR_RESPONSES, TooLarge, error_response, install_error_handlers
from .logs import REQUEST_LOG, RequestLog
from .metrics import Metrics
from .routes import containers, files, threads
from .routes.context import Services
from .routes.lane import ThreadCallLane

__all__ = ["Endpoint", "create_app"]

log = logging.getLogger("codeinterp.gateway")
Hook = Callable[[], Awaitable[None]]


class Endpoint(Protocol):
    """An ASGI app served at one path, with work that runs for the app's lifetime (the MCP sessions)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...

    def run(self) -> AbstractAsyncContextManager[None]: ...


def create_app(services: Services, *, metrics: Metrics, health: Callable[[], Awaitable[dict[str, Any]]],
               max_upload_bytes: int, on_startup: Hook | None = None, on_shutdown: Hook | None = None,
               endpoints: dict[str, Endpoint] | None = None, opentelemetry: bool = False) -> FastAPI:
    """``opentelemetry``: FastAPI's own instrumentation, for an OpenTelemetry SDK set up in this process.
    Off, it costs nothing; on, it looks for a configured provider on every request, even where none is."""
    endpoints = endpoints or {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if on_startup is not None:
            await on_startup()
        try:
            async with AsyncExitStack() as running:
                for endpoint in endpoints.values():
                    await running.enter_async_context(endpoint.run())
                yield
        finally:
            if on_shutdown is not None:
                await on_shutdown()

    app = FastAPI(title="codeinterp", version="0.1.0", lifespan=lifespan,
                  description="A self-hosted, sandboxed code interpreter with OpenAI-shaped APIs.",
                  responses=ERROR_RESPONSES,
                  telemetry=None if opentelemetry else {"tracing": False, "metrics": False, "logs": False})
    app.state.services = services
    install_error_handlers(app)
    # Starlette tries routes in order: the calls a run engine makes all the time come first. The
    # prefixes do not overlap, so the order changes no match.
    # First, before even FastAPI's /docs routes: the run engine's hot route (gateway/routes/lane.py).
    app.router.routes.insert(0, ThreadCallLane(services, app.router))
    for module in (threads, containers, files):
        app.include_router(module.router)
    for path, endpoint in endpoints.items():
        # A Route, not a Mount: the path itself is the endpoint, with no redirect to "path/".
        app.router.routes.append(Route(path, endpoint))

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> JSONResponse:
        report = await health()
        return JSONResponse(report, status_code=200 if report.get("status") == "ok" else 503)

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    app.add_middleware(Observe, metrics=metrics)
    # Outermost: refuse oversized bodies before anything parses or spools them.
    return BodyLimit(app, max_upload_bytes + (1 << 20), json_limit=4 << 20)  # type: ignore[return-value]


class Observe:
    """Metrics and a log line per request, as plain ASGI: no extra task or body streams per request
    (what Starlette's BaseHTTPMiddleware costs). The duration runs to the end of the response body,
    so a streamed call counts whole."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 500  # what the client gets when the app fails before answering
        entry = scope[REQUEST_LOG] = RequestLog()

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            entry.open = False
            path = getattr(scope.get("route"), "path", "unmatched")
            elapsed = time.monotonic() - started
            self.metrics.requests.labels(scope["method"], path, str(status)).inc()
            self.metrics.latency.labels(path).observe(elapsed)
            if log.isEnabledFor(logging.INFO):
                log.info("request", extra={"method": scope["method"], "route": path, "status": status,
                                           "duration_ms": round(elapsed * 1000, 1),
                                           "owner": scope.get("state", {}).get("owner"), **entry.fields})


class BodyLimit:
    """413 for a body over the limit: by Content-Length at once, or when a chunked body passes it."""

    def __init__(self, app: ASGIApp, limit: int, *, json_limit: int) -> None:
        self.app, self.limit, self.json_limit = app, limit, json_limit

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        multipart = headers.get(b"content-type", b"").startswith(b"multipart/")
        limit = self.limit if multipart else self.json_limit
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _reject(send, limit)
            return
        seen = 0
        started = overflowed = False

        async def counted_send(message: Message) -> None:
            nonlocal started
            if overflowed:
                # A handler may have caught the overflow as a parse error (FastAPI answers 400 for
                # any exception while reading a JSON body): the answer is still 413, sent once.
                if not started:
                    started = True
                    await _reject(send, limit)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        async def counted_receive() -> Message:
            nonlocal seen, overflowed
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    overflowed = True
                    raise _Overflow(f"The request body is larger than {limit} bytes.")
            return message

        try:
            await self.app(scope, counted_receive, counted_send)
        except _Overflow:
            if not started:
                await _reject(send, limit)


class _Overflow(TooLarge):
    """Raised into the app's body reading; its handler answers 413."""


async def _reject(send: Send, limit: int) -> None:
    response = error_response(TooLarge(f"The request body is larger than {limit} bytes."))
    await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})
