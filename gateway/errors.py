"""The gateway's error tree, and the one table that maps errors to HTTP.

    GatewayError
    ├── BadRequest        400  invalid_request_error
    ├── Unauthorized      401  authentication_error
    ├── NotFound          404  invalid_request_error
    ├── Conflict          409  invalid_request_error
    ├── TooLarge          413  invalid_request_error
    ├── AtCapacity        429  rate_limit_error (with Retry-After)
    └── Unavailable       503  server_error
        └── HeldElsewhere      (forwarded to the gateway that holds the sandbox; 503 only if it cannot be)

Sandbox errors are translated here too, so route code never catches them. A failure of the
platform (a 5xx) is told to the tenant in our words, never in Docker's: the detail is logged
with the ids that find it.
"""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

import sandbox

__all__ = [
    "ERROR_RESPONSES",
    "AtCapacity",
    "BadRequest",
    "Conflict",
    "ErrorBody",
    "GatewayError",
    "HeldElsewhere",
    "NotFound",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "install_error_handlers",
    "public_message",
]

log = logging.getLogger("codeinterp.gateway")


class GatewayError(Exception):
    status = 500
    type = "server_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


class BadRequest(GatewayError):
    status, type = 400, "invalid_request_error"


class Unauthorized(GatewayError):
    status, type = 401, "authentication_error"


class NotFound(GatewayError):
    status, type = 404, "invalid_request_error"


class Conflict(GatewayError):
    status, type = 409, "invalid_request_error"


class TooLarge(GatewayError):
    status, type = 413, "invalid_request_error"


class AtCapacity(GatewayError):
    status, type = 429, "rate_limit_error"

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(GatewayError):
    status, type = 503, "server_error"


class HeldElsewhere(Unavailable):
    """Another gateway on this database holds the sandbox the request needs (gateway/nodes.py forwards it)."""

    def __init__(self, node: str, url: str | None = None) -> None:
        super().__init__(f"The sandbox is held by gateway {node!r}, which cannot be reached now; retry shortly.")
        self.node, self.url = node, url


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    """OpenAI's error shape; documented on every route so clients and fuzzers know what a 4xx/5xx holds."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorBody, "description": what} for status, what in (
        (400, "Invalid request"), (401, "Missing or wrong API key"), (404, "No such object or route"),
        (409, "The object is in the wrong state"), (413, "Body or file over the size limit"),
        (429, "At capacity; see Retry-After"), (503, "Docker or the kernel image is unavailable"))}


_RETRY = "Try again; the server's log has the details."

# The one table: sandbox failures, by class, to the gateway error they become and what the tenant is
# told. None keeps the library's own message, which is about the caller's input (a file name, a path
# in /mnt/data, a size); the others may quote Docker, so the tenant gets ours and the log gets theirs.
_SANDBOX: list[tuple[type[sandbox.SandboxError], type[GatewayError], str | None]] = [
    (sandbox.InvalidFileName, BadRequest, None),
    (sandbox.ConfigError, BadRequest, None),
    (sandbox.FileNotFound, NotFound, None),
    (sandbox.UnsafeFile, BadRequest, None),
    (sandbox.FileTooLarge, TooLarge, None),
    (sandbox.SessionClosed, Conflict, "The sandbox was stopped; create a new container to run code."),
    (sandbox.BackendUnavailable, Unavailable, "The sandbox engine is unavailable right now; try again later."),
    (sandbox.ImageNotFound, Unavailable,
     "This server cannot start sandboxes: its kernel image is missing. Ask its operator."),
    (sandbox.KernelStartError, Unavailable, f"The sandbox's Python kernel did not start. {_RETRY}"),
    (sandbox.SandboxError, Unavailable, f"The sandbox failed unexpectedly. {_RETRY}"),
]


def _row(exc: Exception) -> tuple[type[GatewayError], str | None]:
    for source, target, message in _SANDBOX:
        if isinstance(exc, source):
            return target, message
    return Unavailable, _SANDBOX[-1][2]


def public_message(exc: Exception) -> str:
    """What a tenant may be told about a sandbox failure (any other exception: that the sandbox failed)."""
    return _row(exc)[1] or str(exc)


def translate(exc: sandbox.SandboxError) -> GatewayError:
    target, _ = _row(exc)
    return target(public_message(exc))


def _body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, object]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(exc: GatewayError) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, AtCapacity) else None
    if isinstance(exc, Unauthorized):
        headers = {"WWW-Authenticate": "Bearer"}
    if isinstance(exc, HeldElsewhere):
        headers = {"Retry-After": "1"}
    return JSONResponse(_body(exc.message, exc.type, exc.param, exc.code), status_code=exc.status,
                        headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GatewayError)
    async def _gateway(request: Request, exc: GatewayError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(sandbox.SandboxError)
    async def _sandbox(request: Request, exc: sandbox.SandboxError) -> JSONResponse:
        mapped = translate(exc)
        if mapped.message == str(exc):
            return error_response(mapped)
        request_id = uuid.uuid4().hex
        log.warning("sandbox failure", extra={"request_id": request_id, "error": type(exc).__name__,
                                              "detail": str(exc), "path": request.url.path})
        mapped.message = f"{mapped.message} (request id {request_id})"
        response = error_response(mapped)
        response.headers["X-Request-Id"] = request_id
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "form")]
        param = ".".join(loc) or None
        kind = first.get("type", "")
        if kind == "json_invalid":
            message = "The request body is not valid JSON."
            param = None  # its loc is the error's offset in the body, not a parameter
        elif param is None:  # the body as a whole: absent, or not an object (a list, text/plain)
            message = ("The request body must be a JSON object, sent with Content-Type: application/json"
                       + ("; it is empty." if kind == "missing" else "."))
        elif kind == "missing":
            message = f"Missing required parameter: '{param}'."
        else:
            message = f"Invalid value for '{param}': {first.get('msg', 'invalid')}."
        return JSONResponse(_body(message, "invalid_request_error", param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = "invalid_request_error" if exc.status_code < 500 else "server_error"
        message = str(exc.detail) if exc.status_code != 404 else f"Unknown route {request.url.path}."
        return JSONResponse(_body(message, type_), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        request_id = uuid.uuid4().hex
        log.exception("unexpected error", extra={"request_id": request_id, "path": request.url.path})
        return JSONResponse(
            _body(f"The server had an error processing your request (request id {request_id}).",
                  "server_error"), status_code=500, headers={"X-Request-Id": request_id})
