"""The file store: each stored file's bytes, on disk under the data dir, named by file id."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from .errors import TooLarge

__all__ = ["BlobStore"]

_CHUNK = 1 << 20


class BlobStore:
    """Write-once blobs; a blob is visible only once written whole (rename into place)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / ".incoming"

    def create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(exist_ok=True)

    def path(self, file_id: str) -> Path:
        return self.root / file_id

    def scratch(self) -> Path:
        """A fresh path in the store's own directory, so that adopting it is a rename."""
        return self.tmp / secrets.token_hex(8)

    async def save_stream(self, file_id: str, chunks: AsyncIterator[bytes], max_bytes: int) -> tuple[int, str]:
        tmp = self.scratch()
        digest, size = hashlib.sha256(), 0
        try:
            with open(tmp, "wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise TooLarge(f"The file is larger than the {max_bytes} byte limit.")
                    digest.update(chunk)
                    await asyncio.to_thread(out.write, chunk)
                await asyncio.to_thread(_sync, out)
            self.adopt(tmp, file_id)
        finally:
            tmp.unlink(missing_ok=True)
        return size, digest.hexdigest()

    async def save_file(self, file_id: str, source: BinaryIO, max_bytes: int) -> tuple[int, str]:
        async def chunks() -> AsyncIterator[bytes]:
            while chunk := await asyncio.to_thread(source.read, _CHUNK):
                yield chunk
        return await self.save_stream(file_id, chunks(), max_bytes)

    def adopt(self, tmp: Path, file_id: str) -> None:
        os.replace(tmp, self.path(file_id))

    def delete(self, file_id: str) -> None:
        self.path(file_id).unlink(missing_ok=True)

    def used_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.iterdir() if p.is_file())


def _sync(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())
