"""A ContainerService and CallService over sandbox.testing.FakeBackend and a real SQLite store: no Docker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import sandbox
from gateway.blobs import BlobStore
from gateway.calls import CallService
from gateway.capacity import Capacity, HostMeter
from gateway.container_files import ContainerFiles
from gateway.containers import ContainerService, SandboxDefaults
from gateway.files import FileService
from gateway.records import ContainerRecord
from gateway.store import Store
from sandbox.testing import FakeBackend, Gate

__all__ = ["OWNER", "GatedStore", "Harness", "chunks", "harness", "harnessed", "settle"]

OWNER = "owner"


class GatedStore(Store):
    """The real store, with a gate just after a container's record is written."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.added = Gate()

    async def add_container(self, record: ContainerRecord) -> bool:
        added = await super().add_container(record)
        await self.added.pass_through()
        return added


class Harness:
    def __init__(self, tmp_path: Path, max_sandboxes: int, store: type[Store]) -> None:
        self.backend = FakeBackend(root=tmp_path / "hosts")
        self.store = store(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
        self.blobs = BlobStore(tmp_path / "files")
        self.files = FileService(self.store, self.blobs, 1 << 20)
        self.service = ContainerService(self.store, self.files, self.backend, SandboxDefaults(
            limits=sandbox.Limits(), labels={}, max_file_ids=20, thread_expiry_minutes=60,
            capacity_wait=0.5, pool_size=0, pool_pause=0),
            # A count alone: no reserve and no cost per sandbox, so the host's memory never decides here.
            Capacity(HostMeter(), reserve=0, per_sandbox=0, cpu_pressure_limit=0, max_sandboxes=max_sandboxes))
        self.container_files = ContainerFiles(self.service)
        self.calls = CallService(self.store, self.files, self.service, self.container_files, default_timeout=30,
                                 max_timeout=60)

    async def thread_call(self, thread_id: str) -> tuple[str, bool]:
        """A thread's call that does nothing: its container id and whether it was restored."""
        record, _, restored = await self.service.thread_session(OWNER, thread_id)
        self.service.release(record.id)
        return record.id, restored  # None, or how it came back (Restored)

    def untracked(self) -> set[str]:
        """Hosts running in the backend that no live session of the service stands for."""
        live = {s.host.name for s in self.service._live.values()}
        return set(self.backend.running) - live

    async def status(self, container_id: str) -> str:
        record = await self.store.container_by_id(container_id)
        assert record is not None
        return record.status


@contextlib.asynccontextmanager
async def harnessed(tmp_path: Path, *, max_sandboxes: int = 4, store: type[Store] = Store) -> AsyncIterator[Harness]:
    h = Harness(tmp_path, max_sandboxes, store)
    await h.store.migrate()
    h.blobs.create()
    try:
        yield h
    finally:
        await h.service.close_all()
        await h.store.close()
        await h.backend.aclose()


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with harnessed(tmp_path) as h:
        yield h


async def settle() -> None:
    """Let every task that can run, run (the store's queries go to a thread, so give them time too)."""
    for _ in range(20):
        await asyncio.sleep(0.01)


async def chunks(data: bytes, size: int = 1 << 16) -> AsyncIterator[bytes]:
    """An upload's body, as the server receives it."""
    for start in range(0, len(data), size):
        yield data[start:start + size]
