"""The rows the store returns, as frozen values, and the ids they carry."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["CallRecord", "ContainerFileRecord", "ContainerRecord", "FileRecord", "NodeRecord", "Page", "new_id"]


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


@dataclass(frozen=True)
class FileRecord:
    id: str
    owner: str
    filename: str
    bytes: int
    purpose: str
    sha256: str
    created_at: int


@dataclass(frozen=True)
class ContainerRecord:
    id: str
    owner: str
    name: str
    thread_id: str | None
    status: str
    created_at: int
    last_active_at: float
    expires_minutes: float
    memory_limit: str
    docker_id: str | None
    node: str | None = None


@dataclass(frozen=True)
class ContainerFileRecord:
    id: str
    container_id: str
    path: str
    bytes: int
    source: str
    file_id: str | None
    sha256: str | None
    created_at: int
    mtime: float | None = None


@dataclass(frozen=True)
class CallRecord:
    id: str
    container_id: str
    status: str
    body: dict[str, Any]
    created_at: int
    node: str | None = None


@dataclass(frozen=True)
class NodeRecord:
    name: str
    url: str | None
    started_at: float
    seen_at: float


@dataclass(frozen=True)
class Page:
    data: Sequence[Any]
    has_more: bool
