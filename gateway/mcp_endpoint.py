"""/mcp: the tool server over streamable HTTP, behind the gateway's API keys.

Each MCP session is a thread of the caller's tenant, ``mcp-<session id>``: its sandbox is made
on first use, counts against the gateway's capacity, expires when idle like any thread's
(files kept), and is deleted when the client ends the session. The SDK binds a session to
the key that opened it, so another key cannot use or end it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mcp.server import ServerRequestContext
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from .errors import GatewayError, error_response
from .routes.context import Services
from .toolserver import ToolLimits, build_server
from .workspaces import ThreadWorkspace, Workspace, WorkspaceError

__all__ = ["McpEndpoint", "thread_of_session"]

# Without API keys the gateway serves loopback only; these stop a web page from reaching it through
# DNS rebinding (a hostile name resolving to 127.0.0.1), which the SDK checks by Host and Origin.
_LOOPBACK = TransportSecuritySettings(
    enable_dns_rebinding_protection=True,
    allowed_hosts=["127.0.0.1", "127.0.0.1:*", "localhost", "localhost:*", "[::1]", "[::1]:*"],
    allowed_origins=["http://127.0.0.1", "http://127.0.0.1:*", "http://localhost", "http://localhost:*",
                     "http://[::1]", "http://[::1]:*"])


def thread_of_session(session_id: str) -> str:
    return f"mcp-{session_id}"


class McpEndpoint:
    """An ASGI app: the key check, then the SDK's session manager, then ending sandboxes with sessions."""

    def __init__(self, services: Services, limits: ToolLimits, *, idle_timeout: float) -> None:
        self.services = services
        self.server = build_server(self._workspace_for, limits)
        self.manager = StreamableHTTPSessionManager(
            self.server, session_idle_timeout=idle_timeout,
            security_settings=None if services.keys.enabled else _LOOPBACK)

    @asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        """The session manager's task group; it must run inside the app's lifespan."""
        async with self.manager.run():
            yield

    async def _workspace_for(self, ctx: ServerRequestContext[Any, Any]) -> Workspace:
        request = ctx.request
        session_id = request.headers.get(MCP_SESSION_ID_HEADER) if isinstance(request, Request) else None
        if request is None or not session_id:
            raise WorkspaceError("This server keeps one sandbox per MCP session: connect with an initialize "
                                 "handshake (protocol 2025-11-25 or earlier) so that requests carry a session id.")
        services = self.services
        return ThreadWorkspace(services.containers, services.container_files, services.calls, services.files,
                               request.state.owner, thread_of_session(session_id))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.manager.handle_request(scope, receive, send)
            return
        request = Request(scope)
        try:
            owner = self.services.keys.owner(request)
        except GatewayError as exc:
            await error_response(exc)(scope, receive, send)
            return
        request.state.owner = owner
        # The SDK refuses a session to any principal but the one that opened it.
        scope["user"] = AuthenticatedUser(AccessToken(token="", client_id=owner, scopes=[]))
        session_id = request.headers.get(MCP_SESSION_ID_HEADER)
        if request.method != "DELETE" or not session_id:
            await self.manager.handle_request(scope, receive, send)
            return
        services = self.services
        ending = ThreadWorkspace(services.containers, services.container_files, services.calls, services.files,
                                 owner, thread_of_session(session_id))

        async def end_first(message: Message) -> None:
            # The manager accepted the client's DELETE: remove the sandbox before the client hears so.
            if message["type"] == "http.response.start" and 200 <= message["status"] < 300:
                await ending.close()
            await send(message)

        await self.manager.handle_request(scope, receive, end_first)
