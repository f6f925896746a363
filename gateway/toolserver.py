"""The MCP tool server: run_python and file tools over one workspace per MCP session.

Built on the official SDK's low-level ``Server``: its handlers see the request, which is
how the HTTP endpoint finds the session's workspace, and they shape results exactly
(``isError`` results for errors in the code and for bad input, never protocol errors).
Produced files come back as resource links (``sandbox:/mnt/data/<path>``, the links
OpenAI's code interpreter writes) that ``resources/read`` serves from the session's sandbox.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import mimetypes
import os
import signal
import stat
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote, unquote

import mcp_types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server
from mcp.shared.exceptions import MCPError

import sandbox

from .workspaces import DATA_DIR, FileEntry, RunOutput, Workspace, WorkspaceError, relative_path

__all__ = ["RESOURCE_NOT_FOUND", "ToolLimits", "WorkspaceFor", "build_server", "file_uri", "serve_stdio"]

RESOURCE_NOT_FOUND = -32002  # the MCP specification's code for resources/read of an unknown URI
URI_PREFIX = f"sandbox:{DATA_DIR}/"
STDIN_LINE_LIMIT = 64 << 20  # one JSON-RPC message per line; an upload_file carries its file base64-encoded
WorkspaceFor = Callable[[ServerRequestContext[Any, Any]], Awaitable[Workspace]]
Content = types.TextContent | types.ImageContent | types.ResourceLink | types.EmbeddedResource


@dataclass(frozen=True)
class ToolLimits:
    default_timeout: float
    max_timeout: float


def file_uri(entry: FileEntry) -> str:
    return URI_PREFIX + quote(entry.path)


def _mime(path: str) -> str:
    return mimetypes.guess_type(path)[0] or "application/octet-stream"


def _tools(limits: ToolLimits) -> list[types.Tool]:
    where = (f"Files live in {DATA_DIR}: uploaded files are there, and every file the code writes there is "
             "returned to you. ")
    return [
        types.Tool(
            name="run_python",
            title="Run Python",
            description=(
                "Run Python code in a sandboxed, stateful Jupyter kernel. Variables, imports and files persist "
                "between calls in this session, until restart(). " + where +
                "There is no network access: pip install and downloads fail. pandas, numpy, scipy, matplotlib "
                "and openpyxl are installed. Returns stdout, stderr, the last expression's value and any "
                "traceback as text; each figure shown (plt.show()) as a PNG image; and each file written to "
                f"{DATA_DIR} as a resource link. Each call is stopped after {limits.default_timeout:g} seconds "
                f"unless you pass timeout (at most {limits.max_timeout:g}); variables survive a timeout."),
            input_schema={
                "type": "object",
                "properties": {
                    "code": {"type": "string", "description": "Python source to run, as in a notebook cell."},
                    "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": limits.max_timeout,
                                "description": f"Seconds before the run is interrupted "
                                               f"(default {limits.default_timeout:g})."}},
                "required": ["code"], "additionalProperties": False},
            annotations=types.ToolAnnotations(open_world_hint=False)),
        types.Tool(
            name="upload_file",
            title="Upload a file",
            description=(f"Put a file in {DATA_DIR}/<name> for run_python to read. If the name is taken, a "
                         "numbered name is chosen; the result says which. For files up to a few MB."),
            input_schema={
                "type": "object",
                "properties": {
                    "name": {"type": "string", "description": "File name, e.g. sales.csv."},
                    "content_base64": {"type": "string", "description": "The file's bytes, base64-encoded."}},
                "required": ["name", "content_base64"], "additionalProperties": False},
            annotations=types.ToolAnnotations(destructive_hint=False, open_world_hint=False)),
        types.Tool(
            name="list_files",
            title="List files",
            description=f"List the files in {DATA_DIR} in this session's sandbox, with their sizes.",
            input_schema={"type": "object", "properties": {}, "additionalProperties": False},
            annotations=types.ToolAnnotations(read_only_hint=True, open_world_hint=False)),
        types.Tool(
            name="download_file",
            title="Download a file",
            description=(f"Read a file from {DATA_DIR} (a path such as {DATA_DIR}/report.csv or report.csv): "
                         "returned as text when it is UTF-8, otherwise as base64 bytes."),
            input_schema={
                "type": "object",
                "properties": {"path": {"type": "string", "description": f"The file's path under {DATA_DIR}."}},
                "required": ["path"], "additionalProperties": False},
            annotations=types.ToolAnnotations(read_only_hint=True, open_world_hint=False)),
        types.Tool(
            name="restart",
            title="Restart the kernel",
            description=(f"Restart the Python kernel: all variables and imports are lost; files in {DATA_DIR} "
                         "are kept. Use it when the kernel is stuck or its state is broken."),
            input_schema={"type": "object", "properties": {}, "additionalProperties": False},
            annotations=types.ToolAnnotations(destructive_hint=True, idempotent_hint=True, open_world_hint=False)),
    ]


def _text(text: str) -> types.TextContent:
    return types.TextContent(type="text", text=text)


def _string(arguments: dict[str, Any], name: str) -> str:
    value = arguments.get(name)
    if not isinstance(value, str):
        raise WorkspaceError(f"'{name}' is required and must be a string.")
    return value


def _run_content(output: RunOutput) -> list[Content]:
    logs = output.logs
    if output.error and output.error != "execution_error":  # a traceback already says what went wrong
        logs += ("" if not logs or logs.endswith("\n") else "\n") + f"[{output.error}] {output.message}"
    content: list[Content] = [_text(logs or "(no output)")]
    for mime, data in output.images:
        content.append(types.ImageContent(type="image", data=base64.b64encode(data).decode(), mime_type=mime))
    if output.files:
        listing = "\n".join(f"{f.sandbox_path} ({f.size} bytes)" for f in output.files)
        content.append(_text(f"Files written:\n{listing}"))
    for entry in output.files:
        content.append(types.ResourceLink(type="resource_link", uri=file_uri(entry), name=entry.path,
                                          mime_type=_mime(entry.path), size=entry.size))
    return content


def _contents(uri: str, path: str, data: bytes) -> types.TextResourceContents | types.BlobResourceContents:
    mime = _mime(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and "\x00" not in text:
        return types.TextResourceContents(uri=uri, text=text, mime_type=mime if mime.startswith("text/") or
                                          mime in ("application/json", "application/xml") else "text/plain")
    return types.BlobResourceContents(uri=uri, blob=base64.b64encode(data).decode(), mime_type=mime)


class _Tools:
    def __init__(self, workspace_for: WorkspaceFor, limits: ToolLimits) -> None:
        self.workspace_for, self.limits = workspace_for, limits
        self.tools = _tools(limits)

    async def list_tools(self, ctx: ServerRequestContext[Any, Any],
                         params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return types.ListToolsResult(tools=self.tools)

    async def call_tool(self, ctx: ServerRequestContext[Any, Any],
                        params: types.CallToolRequestParams) -> types.CallToolResult:
        handler = getattr(self, f"_tool_{params.name}", None)
        if handler is None:
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {params.name}")
        try:
            workspace = await self.workspace_for(ctx)
            content, failed = await handler(workspace, params.arguments or {})
        except WorkspaceError as exc:
            return types.CallToolResult(content=[_text(str(exc))], is_error=True)
        return types.CallToolResult(content=content, is_error=failed)

    async def _tool_run_python(self, workspace: Workspace, arguments: dict[str, Any]) -> tuple[list[Content], bool]:
        code = _string(arguments, "code")
        if not code.strip():
            raise WorkspaceError("'code' is empty: pass the Python source to run.")
        timeout = arguments.get("timeout")
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
                raise WorkspaceError("'timeout' must be a positive number of seconds.")
            timeout = min(float(timeout), self.limits.max_timeout)
        output = await workspace.run(code, timeout)
        return _run_content(output), output.error is not None

    async def _tool_upload_file(self, workspace: Workspace, arguments: dict[str, Any]) -> tuple[list[Content], bool]:
        try:
            # Strict, as on /v1/files: a name with path parts is refused, never silently changed.
            name = sandbox.safe_name(_string(arguments, "name"), strict=True)
        except sandbox.InvalidFileName as exc:
            raise WorkspaceError(f"Bad 'name': {exc}.") from exc
        try:
            data = base64.b64decode(_string(arguments, "content_base64"), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise WorkspaceError(f"'content_base64' is not valid base64 ({exc}); encode the file's bytes with "
                                 "standard base64.") from exc
        entry = await workspace.upload(name, data)
        return [_text(f"Saved {entry.sandbox_path} ({entry.size} bytes).")], False

    async def _tool_list_files(self, workspace: Workspace, arguments: dict[str, Any]) -> tuple[list[Content], bool]:
        files = await workspace.list_files()
        if not files:
            return [_text(f"{DATA_DIR} is empty.")], False
        return [_text("\n".join(f"{f.sandbox_path} ({f.size} bytes)" for f in files))], False

    async def _tool_download_file(self, workspace: Workspace,
                                  arguments: dict[str, Any]) -> tuple[list[Content], bool]:
        path = relative_path(_string(arguments, "path"))
        data = await workspace.read(path)
        contents = _contents(URI_PREFIX + quote(path), path, data)
        return [types.EmbeddedResource(type="resource", resource=contents)], False

    async def _tool_restart(self, workspace: Workspace, arguments: dict[str, Any]) -> tuple[list[Content], bool]:
        restarted = await workspace.restart()
        text = "The kernel was restarted: variables are gone; files in /mnt/data are kept." if restarted else \
            "Nothing has run in this session yet; the kernel is fresh."
        return [_text(text)], False

    async def list_resources(self, ctx: ServerRequestContext[Any, Any],
                             params: types.PaginatedRequestParams | None) -> types.ListResourcesResult:
        try:
            files = await (await self.workspace_for(ctx)).list_files()
        except WorkspaceError as exc:
            raise MCPError(code=types.INVALID_REQUEST, message=str(exc)) from exc
        return types.ListResourcesResult(resources=[
            types.Resource(uri=file_uri(f), name=f.path, mime_type=_mime(f.path), size=f.size) for f in files])

    async def read_resource(self, ctx: ServerRequestContext[Any, Any],
                            params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        uri = str(params.uri)
        if not uri.startswith(URI_PREFIX):
            raise MCPError(code=RESOURCE_NOT_FOUND, message=f"Unknown resource {uri}; files are {URI_PREFIX}<path>.",
                           data={"uri": uri})
        try:
            path = relative_path(unquote(uri.removeprefix(URI_PREFIX)))
            data = await (await self.workspace_for(ctx)).read(path)
        except WorkspaceError as exc:
            raise MCPError(code=RESOURCE_NOT_FOUND, message=str(exc), data={"uri": uri}) from exc
        return types.ReadResourceResult(contents=[_contents(uri, path, data)])


def build_server(workspace_for: WorkspaceFor, limits: ToolLimits, *, instructions: str | None = None) -> Server[Any]:
    """The MCP server; ``workspace_for`` finds the workspace of a request's session."""
    tools = _Tools(workspace_for, limits)
    return Server("codeinterp", version="0.1.0", title="codeinterp", instructions=instructions or (
        f"A sandboxed Python interpreter. Call run_python to compute, analyse data and plot; files are in "
        f"{DATA_DIR} and everything persists for this session."),
        on_list_tools=tools.list_tools, on_call_tool=tools.call_tool,
        on_list_resources=tools.list_resources, on_read_resource=tools.read_resource)


class _Lines:
    """stdin as lines that a cancel interrupts: the SDK's default reads in a thread that a cancel must wait for."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader

    def __aiter__(self) -> _Lines:
        return self

    async def __anext__(self) -> str:
        line = await self.reader.readline()
        if not line:
            raise StopAsyncIteration
        return line.decode("utf-8", errors="replace")


async def _stdin_lines() -> _Lines | None:
    if not stat.S_ISFIFO(os.fstat(0).st_mode) and not stat.S_ISSOCK(os.fstat(0).st_mode):
        return None  # a file or terminal: the SDK's own reader
    reader = asyncio.StreamReader(limit=STDIN_LINE_LIMIT)
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return _Lines(reader)


async def serve_stdio(workspace: Workspace, limits: ToolLimits) -> None:
    """Serve one MCP session on stdin/stdout until the client closes it; the workspace ends with it."""

    async def workspace_for(ctx: ServerRequestContext[Any, Any]) -> Workspace:
        return workspace

    server = build_server(workspace_for, limits)
    task = asyncio.current_task()
    # A desktop agent may end its servers with SIGTERM: cancel, so that the sandbox is removed below.
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        stdin = await _stdin_lines()
        async with stdio_server(stdin=cast(Any, stdin)) as (read, write):
            await server.run(read, write, server.create_initialization_options())
    finally:
        await asyncio.shield(workspace.close())
