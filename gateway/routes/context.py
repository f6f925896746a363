"""What every route needs: the services, and the caller's identity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fastapi import Request

from ..auth import KeyRing
from ..calls import CallService
from ..container_files import ContainerFiles
from ..containers import ContainerService
from ..files import FileService

__all__ = ["Order", "Services", "owner_of"]

Order = Literal["asc", "desc"]


@dataclass(frozen=True)
class Services:
    files: FileService
    containers: ContainerService
    container_files: ContainerFiles
    calls: CallService
    keys: KeyRing
    sse_keepalive: float = 15.0  # seconds of silence before a streamed call gets a comment line


async def owner_of(request: Request) -> str:
    # async: a plain def dependency would hop to the threadpool on every request for microseconds of work.
    services: Services = request.app.state.services
    owner = services.keys.owner(request)
    request.state.owner = owner
    return owner

