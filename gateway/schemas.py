"""The wire: request bodies and response objects in OpenAI's shapes, and their conversion from records."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .records import ContainerFileRecord, ContainerRecord, FileRecord

__all__ = [
    "AnnotateRequest",
    "AutoContainer",
    "CallFormat",
    "CallRequest",
    "CreateContainerFileRequest",
    "CreateContainerRequest",
    "ExpiresAfter",
    "ImageUrlMode",
    "ThreadCallRequest",
    "container_file_object",
    "container_object",
    "file_object",
    "list_object",
]

THREAD_ID = r"^[A-Za-z0-9_-]{1,128}$"
# How a call is shown: an Assistants run-step tool call (as stored), or a Responses code_interpreter_call item.
CallFormat = Literal["run_step", "responses"]
# Responses images: an absolute URL of the file's content on this gateway, or the bytes inline as a data: URL.
ImageUrlMode = Literal["gateway", "data"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExpiresAfter(_Strict):
    anchor: Literal["last_active_at"] = "last_active_at"
    minutes: int = Field(20, ge=1, le=7 * 24 * 60)


class CreateContainerRequest(_Strict):
    name: str = Field(..., min_length=1, max_length=256)
    file_ids: list[str] = Field(default_factory=list)
    expires_after: ExpiresAfter | None = None
    memory_limit: str = "1g"


class CreateContainerFileRequest(_Strict):
    file_id: str = Field(..., min_length=1, max_length=64)


class CallRequest(_Strict):
    input: str = Field(..., min_length=1, max_length=1_000_000)
    file_ids: list[str] = Field(default_factory=list)
    timeout: float | None = Field(None, gt=0, le=86_400)
    stream: bool = False
    format: CallFormat = "run_step"
    image_url: ImageUrlMode = "gateway"
    # Answer at once with the call in progress; the call runs on, and GET .../calls/{id} follows it.
    background: bool = False


class AutoContainer(_Strict):
    """The Responses tool's ``container: {"type": "auto"}``: the thread's active container, or a new one."""

    type: Literal["auto"]
    file_ids: list[str] = Field(default_factory=list)
    memory_limit: Literal["1g", "4g", "16g", "64g"] | None = None


class ThreadCallRequest(CallRequest):
    # A container id runs the call in that container; "auto" (the default) in the thread's own.
    container: Annotated[str, Field(min_length=1, max_length=64)] | AutoContainer | None = None


class AnnotateRequest(_Strict):
    text: str = Field(..., max_length=1_000_000)
    format: CallFormat = "run_step"


def file_object(record: FileRecord) -> dict[str, Any]:
    return {"id": record.id, "object": "file", "bytes": record.bytes, "created_at": record.created_at,
            "expires_at": None, "filename": record.filename, "purpose": record.purpose, "status": "processed",
            "status_details": None}


def container_object(record: ContainerRecord) -> dict[str, Any]:
    return {"id": record.id, "object": "container", "created_at": record.created_at, "status": record.status,
            "expires_after": {"anchor": "last_active_at", "minutes": _minutes(record.expires_minutes)},
            "last_active_at": int(record.last_active_at), "memory_limit": record.memory_limit,
            "name": record.name}


def container_file_object(record: ContainerFileRecord) -> dict[str, Any]:
    return {"id": record.id, "object": "container.file", "created_at": record.created_at, "bytes": record.bytes,
            "container_id": record.container_id, "path": record.path, "source": record.source}


def list_object(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": has_more}


def _minutes(value: float) -> float | int:
    # Whole minutes as OpenAI sends them; a sub-minute thread expiry (tests, demos) stays as configured.
    return int(value) if float(value).is_integer() else value
