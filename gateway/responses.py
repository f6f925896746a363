"""The Responses API's view of a call: a ``code_interpreter_call`` item, its stream events, and citations.

Calls are stored once, as Assistants run-step tool calls; this module shapes a
stored body for a Responses client on the way out. A call has one id in each
shape, sharing its token: ``call_<hex>`` as a run step, ``ci_<hex>`` as an item,
and either names the call on every route.
"""

from __future__ import annotations

import asyncio
import base64
import mimetypes
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .errors import NotFound
from .files import FileService

__all__ = ["CallView", "ImageUrls", "call_id_of", "citations", "code_interpreter_call", "item_id", "stream_events"]

RUN_STEP_PREFIX, ITEM_PREFIX = "call_", "ci_"
# Our live outputs, which no standard Responses event carries, under names of our own.
LOGS_DELTA = "codeinterp.code_interpreter_call.logs.delta"
IMAGE_ADDED = "codeinterp.code_interpreter_call.image.added"
_SHAPE_FIELDS = ("id", "type", "code_interpreter")  # everything else in a body is kept beside the item


def item_id(call_id: str) -> str:
    return ITEM_PREFIX + call_id.removeprefix(RUN_STEP_PREFIX)


def call_id_of(any_id: str) -> str:
    """The stored (run-step) id of a call named by either of its ids."""
    return RUN_STEP_PREFIX + any_id.removeprefix(ITEM_PREFIX) if any_id.startswith(ITEM_PREFIX) else any_id


@dataclass(frozen=True)
class ImageUrls:
    """The ``url`` of an image output: this gateway's content URL for the file, or a ``data:`` URL."""

    files: FileService
    owner: str
    base_url: str  # e.g. http://127.0.0.1:8000, no trailing slash
    inline: bool = False

    async def __call__(self, file_id: str) -> str:
        link = f"{self.base_url}/v1/files/{file_id}/content"
        if not self.inline:
            return link
        try:
            record = await self.files.get(self.owner, file_id)
            data = await asyncio.to_thread(self.files.content_path(record).read_bytes)
        except NotFound:
            return link  # the image was deleted since: the link answers 404, which says so
        mime = mimetypes.guess_type(record.filename)[0] or "application/octet-stream"
        return f"data:{mime};base64,{base64.b64encode(data).decode()}"


async def code_interpreter_call(body: dict[str, Any], urls: Callable[[str], Awaitable[str]]) -> dict[str, Any]:
    """A stored call as a ``code_interpreter_call`` item, our extension fields beside it."""
    tool = body["code_interpreter"]
    return {"id": item_id(body["id"]), "type": "code_interpreter_call", "code": tool["input"],
            "outputs": [await _output(o, urls) for o in tool["outputs"]],
            **{k: v for k, v in body.items() if k not in _SHAPE_FIELDS}}


async def _output(output: dict[str, Any], urls: Callable[[str], Awaitable[str]]) -> dict[str, Any]:
    if output["type"] == "image":
        file_id = output["image"]["file_id"]
        return {"type": "image", "url": await urls(file_id), "file_id": file_id}
    return {"type": "logs", "logs": output["logs"]}


@dataclass(frozen=True)
class CallView:
    """How a route shows calls: as stored (``run_step``), or as Responses items."""

    format: str
    urls: ImageUrls

    async def call(self, body: dict[str, Any]) -> dict[str, Any]:
        return body if self.format == "run_step" else await code_interpreter_call(body, self.urls)


def citations(annotations: list[dict[str, Any]], container_id: str) -> list[dict[str, Any]]:
    """``file_path`` annotations as the Responses API's ``container_file_citation`` annotations."""
    return [{"type": "container_file_citation", "container_id": container_id,
             "file_id": a["file_path"]["file_id"], "filename": a["text"].rsplit("/", 1)[-1],
             "start_index": a["start_index"], "end_index": a["end_index"]} for a in annotations]


async def stream_events(deltas: AsyncIterator[dict[str, Any]], finished: Callable[[], Awaitable[dict[str, Any]]],
                        urls: ImageUrls, container_id: str) -> AsyncIterator[dict[str, Any]]:
    """A call's run-step deltas as Responses stream events, each with its sequence number.

    The order is Responses' own: the item is added, in progress, its code streamed and
    done, interpreting (our log and image events meanwhile), completed, and the whole
    item in ``response.output_item.done``. ``completed`` ends every call; the item's
    ``status`` says how it ended.
    """
    sequence = 0
    current = ""

    def event(kind: str, **fields: Any) -> dict[str, Any]:
        nonlocal sequence
        sequence += 1
        return {"type": kind, "sequence_number": sequence - 1, "output_index": 0, "item_id": current, **fields}

    async for delta in deltas:
        tool = delta["code_interpreter"]
        if "id" in delta:  # the first delta: the call and its code
            current = item_id(delta["id"])
            code = tool.get("input", "")
            yield event("response.output_item.added", item={
                "id": current, "type": "code_interpreter_call", "code": None, "outputs": None,
                "container_id": container_id, "status": "in_progress"})
            yield event("response.code_interpreter_call.in_progress")
            yield event("response.code_interpreter_call_code.delta", delta=code)
            yield event("response.code_interpreter_call_code.done", code=code)
            yield event("response.code_interpreter_call.interpreting")
        for output in tool.get("outputs", []):
            if output["type"] == "logs":
                yield event(LOGS_DELTA, content_index=output["index"], delta=output["logs"])
            else:
                file_id = output["image"]["file_id"]
                yield event(IMAGE_ADDED, content_index=output["index"], url=await urls(file_id), file_id=file_id)
    item = await code_interpreter_call(await finished(), urls)
    current = item["id"]
    yield event("response.code_interpreter_call.completed")
    yield event("response.output_item.done", item=item)
