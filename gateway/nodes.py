"""Several gateways on one database: each one's heartbeat, and forwarding to the one holding a sandbox.

A container's live sandbox is held by one gateway (the ``node`` column). A request that needs it and
reaches another gateway is forwarded to the holder's advertised URL, so that a thread's calls all run
where its kernel is, serialised by that gateway's thread lock. A holder is live while its heartbeat is
recent and its URL accepts connections; a thread held by a gateway that is gone is claimed (a
conditional update) and restored from its stored files by the gateway that got the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from urllib.parse import urlsplit

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from .errors import HeldElsewhere, Unavailable, error_response
from .store import Store

__all__ = ["FORWARDED_HEADER", "NodeDirectory", "install_forwarding"]

log = logging.getLogger("codeinterp.gateway")

FORWARDED_HEADER = "x-codeinterp-forwarded-by"
_HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade",
               "proxy-connection", "te", "trailer"}
_PROBE_TIMEOUT = 2.0  # seconds a TCP connect to a holder may take before it counts as gone


class NodeDirectory:
    """This gateway's row in the nodes table, kept fresh, and the live URL of any other gateway."""

    def __init__(self, store: Store, name: str, url: str, *, interval: float = 5.0, timeout: float = 20.0) -> None:
        self.store, self.name, self.url = store, name, url
        self.interval, self.timeout = interval, timeout
        self._task: asyncio.Task[None] | None = None
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=10.0), follow_redirects=False)

    async def start(self) -> None:
        await self.store.heartbeat(self.name, self.url, started_at=time.time())
        self._task = asyncio.create_task(self._beat(), name="heartbeat")

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.store.heartbeat(self.name, self.url)
            except Exception:  # a database hiccup must not end the heartbeat for good
                log.exception("heartbeat failed")

    async def stop(self) -> None:
        """At a clean shutdown: this gateway holds nothing any more, so others need not wait for it."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self.store.remove_node(self.name)
        await self.client.aclose()

    async def live_url(self, name: str) -> str | None:
        """The URL of gateway ``name`` if it is alive: a recent heartbeat and a port that accepts connections."""
        if name == self.name:
            return self.url
        node = await self.store.get_node(name)
        if node is None or node.url is None or time.time() - node.seen_at > self.timeout:
            return None
        return node.url if await _accepts(node.url) else None


async def _accepts(url: str) -> bool:
    """Whether something listens at the URL's host and port (a killed gateway's port refuses at once)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, port), _PROBE_TIMEOUT)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def install_forwarding(app: FastAPI, directory: NodeDirectory) -> None:
    """Answer HeldElsewhere by proxying the request, streamed both ways, to the holder."""
    client = directory.client

    @app.exception_handler(HeldElsewhere)
    async def _forward(request: Request, exc: HeldElsewhere) -> Response:
        url = exc.url or await directory.live_url(exc.node)
        if url is None or url == directory.url or request.headers.get(FORWARDED_HEADER):
            # Gone, or it moved while the request was in flight: one hop at most, the client retries.
            return error_response(exc)
        try:
            body = await request.body()
        except RuntimeError:  # a streamed upload already read here cannot be sent again
            return error_response(Unavailable(f"This request must be sent to gateway {exc.node!r} ({url}).",
                                              code="held_elsewhere"))
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP]
        headers.append((FORWARDED_HEADER, directory.name))
        target = url.rstrip("/") + request.url.path + (f"?{request.url.query}" if request.url.query else "")
        upstream_request = client.build_request(request.method, target, headers=headers, content=body)
        try:
            upstream = await client.send(upstream_request, stream=True)
        except httpx.TransportError as error:
            log.warning("forwarding failed", extra={"node": exc.node, "error": repr(error)})
            return error_response(exc)
        log.info("forwarded", extra={"node": exc.node, "path": request.url.path, "status": upstream.status_code})
        response_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
        return StreamingResponse(upstream.aiter_raw(), status_code=upstream.status_code, headers=response_headers,
                                 background=BackgroundTask(upstream.aclose))
