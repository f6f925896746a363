"""A sandbox's history as a Jupyter notebook (nbformat 4.5): one code cell per call, images included.

Two sources feed one builder. The gateway turns stored call bodies into cells
(``cell_from_call``, given a reader of stored images); the command line turns the
sandbox's own execution results into cells (``cell_from_result``). Both produce
``Cell`` values whose outputs are already nbformat output dicts, and ``notebook``
assembles them. This module imports nothing but the standard library and
``sandbox``: reading the store is the gateway's part (``CallService.notebook``).
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sandbox

__all__ = ["MEDIA_TYPE", "Cell", "ImageReader", "cell_from_call", "cell_from_result", "image_mime", "notebook"]

MEDIA_TYPE = "application/x-ipynb+json"

# A reader that returns an image's bytes for a file id, or None when it is gone.
ImageReader = Callable[[str], Awaitable[bytes | None]]


@dataclass(frozen=True)
class Cell:
    """One code cell: what ran, and its outputs as nbformat output dicts, in order."""

    source: str
    outputs: Sequence[dict[str, Any]] = ()
    execution_count: int | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])


def stream(name: str, text: str) -> dict[str, Any]:
    return {"output_type": "stream", "name": name, "text": text}


def display(data: Mapping[str, object], metadata: Mapping[str, object] | None = None,
            execution_count: int | None = None) -> dict[str, Any]:
    """display_data, or execute_result when it is a cell's value (which nbformat numbers)."""
    out: dict[str, Any] = {"data": dict(data), "metadata": dict(metadata or {})}
    if execution_count is not None:
        return {"output_type": "execute_result", "execution_count": execution_count, **out}
    return {"output_type": "display_data", **out}


def error(name: str, value: str, traceback: Sequence[str]) -> dict[str, Any]:
    return {"output_type": "error", "ename": name, "evalue": value, "traceback": list(traceback)}


def notebook(cells: Iterable[Cell]) -> dict[str, Any]:
    """The whole nbformat 4.5 document."""
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        },
        "cells": [{"cell_type": "code", "id": c.id, "metadata": {}, "source": c.source,
                   "execution_count": c.execution_count, "outputs": list(c.outputs)} for c in cells],
    }


def image_mime(data: bytes) -> str | None:
    """image/png or image/jpeg by magic number: stored images keep no MIME type of their own."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    return None


# -- from the sandbox library's results (the command line) ------------------------


def cell_from_result(code: str, result: sandbox.ExecutionResult) -> Cell:
    outputs: list[dict[str, Any]] = []
    for output in result.outputs:
        if isinstance(output, sandbox.Stream):
            outputs.append(stream(output.name, output.text))
        elif isinstance(output, sandbox.Display):
            count = result.execution_count if output.is_result and result.execution_count is not None else None
            outputs.append(display(output.data, output.metadata, count))
        elif isinstance(output, sandbox.ExecutionError):
            outputs.append(error(output.name, output.value, output.traceback))
        else:  # a Notice from the sandbox itself: shown where Jupyter shows warnings
            outputs.append(stream("stderr", output.text + "\n"))
    return Cell(code, outputs, result.execution_count)


# -- from the gateway's stored call bodies -------------------------------------------


async def cell_from_call(body: Mapping[str, Any], read_image: ImageReader) -> Cell:
    """A call body: logs become stdout, images display_data read from the file store, then rich outputs."""
    interpreter = body.get("code_interpreter") or {}
    outputs: list[dict[str, Any]] = []
    for item in interpreter.get("outputs") or []:
        if item.get("type") == "logs" and item.get("logs"):
            outputs.append(stream("stdout", item["logs"]))
        elif item.get("type") == "image":
            file_id = str((item.get("image") or {}).get("file_id", ""))
            data = await read_image(file_id)
            mime = image_mime(data) if data is not None else None
            if data is None or mime is None:
                outputs.append(display({"text/plain": f"[image {file_id} is no longer stored]"}))
            else:
                outputs.append(display({mime: base64.b64encode(data).decode("ascii"),
                                        "text/plain": f"<image {file_id}>"}))
    for rich in body.get("rich_outputs") or []:
        outputs.append(display({str(rich.get("mime_type")): rich.get("data")}))
    count = body.get("execution_count")
    return Cell(str(interpreter.get("input", "")), outputs, count if isinstance(count, int) else None,
                id=str(body.get("id") or uuid.uuid4().hex[:16]).replace("call_", "")[:64])
