"""The run engine's hot route, served before FastAPI's own: a well-formed thread call, with less per request.

``POST /v1/threads/{thread_id}/code_interpreter/calls`` is what a run engine sends all the time. Through
FastAPI it costs about 0.2 ms of CPU per request more than the same work needs (dependency solving,
parameter models, its route layers): on a busy node that is a fifth of what the gateway adds to a call.

The lane is a Starlette route just before FastAPI's for the same path. It takes only requests it can
answer exactly as that route would: a JSON body that parses into ``ThreadCallRequest``, a valid thread id,
a known API key. It then runs the same code (``start_thread_call``, ``respond``) and its exceptions go to
the app's handlers, the one error table, with the request whose body it read (forwarding needs it).
Anything else is declined: the request goes on through the router, with its body replayed, to FastAPI's
route, which answers with the canonical error. The lane never decides what an error looks like.
"""

from __future__ import annotations

import json
import re

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import GatewayError
from ..logs import REQUEST_LOG
from ..schemas import THREAD_ID, ThreadCallRequest
from .calling import call_view, respond
from .context import Services, owner_of
from .threads import THREAD_CALLS, start_thread_call

__all__ = ["ThreadCallLane"]

_DECLINED = "codeinterp.lane_declined"  # a scope key: the request is FastAPI's route's to answer
_THREAD_ID = re.compile(THREAD_ID)  # fullmatch: "$" alone would let a final newline through


class ThreadCallLane(Route):
    """Serves well-formed thread calls; ``router`` (the app's) answers whatever it declines."""

    def __init__(self, services: Services, router: ASGIApp) -> None:
        self.services, self.router = services, router
        super().__init__(THREAD_CALLS, self.serve, methods=["POST"], include_in_schema=False)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if _DECLINED in scope:
            return Match.NONE, {}
        match, child = super().matches(scope)
        if match is Match.FULL:
            # As FastAPI's routes do: the request's metrics and log line name the route, not "unmatched".
            child["route"] = self
        return match, child

    async def serve(self, request: Request) -> Response:
        raw = await request.body()  # kept on ``request``: a handler that forwards the call sends it on
        try:
            owner = await owner_of(request)  # as FastAPI's route has it: the request's log line names it
        except GatewayError:
            owner = None
        body = self._body(request, raw) if owner is not None else None
        if owner is None or body is None:
            return _Declined(self.router, raw)  # type: ignore[return-value]  # an ASGI app, as a response is
        run = await start_thread_call(self.services, owner, request.path_params["thread_id"], body,
                                      request.scope.get(REQUEST_LOG))
        return await respond(self.services, run, body, call_view(request, owner, body.format, body.image_url))

    @staticmethod
    def _body(request: Request, raw: bytes) -> ThreadCallRequest | None:
        """The body, when FastAPI's route would accept it and the thread id too; None otherwise."""
        media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != "application/json" or not _THREAD_ID.fullmatch(request.path_params["thread_id"]):
            return None
        try:
            # Parsed as FastAPI parses a body (json.loads, then the model in Python mode), so that
            # what the lane takes is exactly what the route would take.
            return ThreadCallRequest.model_validate(json.loads(raw))
        except (ValidationError, ValueError, RecursionError):
            # ValueError: not JSON. RecursionError: nested too deep for json.loads (FastAPI says 400).
            return None


class _Declined:
    """Sends the request on through the router, which now skips the lane, with the body read before."""

    def __init__(self, router: ASGIApp, body: bytes) -> None:
        self.router, self.body = router, body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # what comes after the body: a disconnect
            replayed = True
            return {"type": "http.request", "body": self.body, "more_body": False}

        scope[_DECLINED] = True
        await self.router(scope, replay, send)
