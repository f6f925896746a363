"""The file store: each stored file's bytes, on disk under the data dir, named by file id."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from .errors import TooLarge

__all__ = ["BlobStore"]

_BATCH = 4 << 20  # bytes hashed and written per trip to a worker thread


class BlobStore:
    """Write-once blobs; a blob is visible only once written whole (rename into place).

    The bytes in the store are counted as blobs come and go (``used_bytes``), so that reading the
    total never walks the directory. Several gateways may share the root: each writes into its own
    scratch directory (``.incoming/<node>``), so that one's startup never removes another's uploads.
    """

    def __init__(self, root: Path, *, node: str = "local") -> None:
        self.root = root
        self.tmp = root / ".incoming" / node
        self._used = 0

    def create(self) -> None:
        """Make the directories, drop what a crash left half-written, and count what is kept.

        Only at startup: nothing may be writing into ``.incoming`` meanwhile.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.tmp, ignore_errors=True)  # scratch files and exports' .part files
        self.tmp.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp.parent.iterdir():  # from before scratch dirs were per node
            if leftover.is_file():
                leftover.unlink(missing_ok=True)
        self._used = sum(p.stat().st_size for p in self.root.iterdir() if p.is_file())

    def path(self, file_id: str) -> Path:
        return self.root / file_id

    def scratch(self) -> Path:
        """A fresh path in the store's own directory, so that adopting it is a rename."""
        return self.tmp / secrets.token_hex(8)

    async def save_stream(self, file_id: str, chunks: AsyncIterator[bytes], max_bytes: int) -> tuple[int, str]:
        tmp = self.scratch()
        digest, size = hashlib.sha256(), 0
        batch: list[bytes] = []
        batched = 0
        try:
            with open(tmp, "wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise TooLarge(f"The file is larger than the {max_bytes} byte limit.")
                    batch.append(chunk)
                    batched += len(chunk)
                    if batched >= _BATCH:  # hashing and writing happen off the event loop, in big steps
                        await asyncio.to_thread(_write, out, digest, batch)
                        batch, batched = [], 0
                await asyncio.to_thread(_write, out, digest, batch, sync=True)
            self.adopt(tmp, file_id)
        finally:
            tmp.unlink(missing_ok=True)
        return size, digest.hexdigest()

    async def save_file(self, file_id: str, source: BinaryIO, max_bytes: int) -> tuple[int, str]:
        async def chunks() -> AsyncIterator[bytes]:
            while chunk := await asyncio.to_thread(source.read, _BATCH):
                yield chunk
        return await self.save_stream(file_id, chunks(), max_bytes)

    def adopt(self, tmp: Path, file_id: str) -> None:
        size = tmp.stat().st_size
        replaced = self._size(file_id)
        os.replace(tmp, self.path(file_id))
        self._used += size - replaced

    def delete(self, file_id: str) -> None:
        size = self._size(file_id)
        try:
            self.path(file_id).unlink()
        except FileNotFoundError:
            return
        self._used -= size

    def _size(self, file_id: str) -> int:
        try:
            return self.path(file_id).stat().st_size
        except FileNotFoundError:
            return 0

    def used_bytes(self) -> int:
        return self._used


def _write(out: BinaryIO, digest: hashlib._Hash, batch: list[bytes], *, sync: bool = False) -> None:
    for chunk in batch:
        digest.update(chunk)
        out.write(chunk)
    if sync:
        out.flush()
        os.fsync(out.fileno())
