"""Stored files: the OpenAI Files API's domain, over the store and the blob directory."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

import sandbox

from .blobs import BlobStore
from .errors import BadRequest, NotFound
from .records import FileRecord, Page, new_id
from .store import Store

__all__ = ["PURPOSES", "FileService"]

PURPOSES = frozenset({"assistants", "assistants_output", "vision", "user_data", "batch", "fine-tune", "evals"})


def checked_filename(name: str | None) -> str:
    """An upload's name, which must already be a plain base name."""
    if not name:
        raise BadRequest("The uploaded file has no filename; send one in the multipart part.", param="file")
    try:
        return sandbox.safe_name(name, strict=True)
    except sandbox.InvalidFileName as exc:
        raise BadRequest(str(exc), param="file") from exc


class FileService:
    def __init__(self, store: Store, blobs: BlobStore, max_bytes: int) -> None:
        self.store, self.blobs, self.max_bytes = store, blobs, max_bytes

    async def upload(self, owner: str, filename: str | None, purpose: str,
                     chunks: AsyncIterator[bytes]) -> FileRecord:
        if purpose not in PURPOSES:
            raise BadRequest(f"Invalid purpose {purpose!r}; use one of {', '.join(sorted(PURPOSES))}.",
                             param="purpose")
        name = checked_filename(filename)
        file_id = new_id("file-")
        size, sha = await self.blobs.save_stream(file_id, chunks, self.max_bytes)
        return await self.store.add_file(FileRecord(id=file_id, owner=owner, filename=name, bytes=size,
                                                    purpose=purpose, sha256=sha, created_at=int(time.time())))

    async def store_file(self, owner: str, filename: str, purpose: str, source: BinaryIO) -> FileRecord:
        file_id = new_id("file-")
        size, sha = await self.blobs.save_file(file_id, source, self.max_bytes)
        return await self.store.add_file(FileRecord(id=file_id, owner=owner, filename=filename, bytes=size,
                                                    purpose=purpose, sha256=sha, created_at=int(time.time())))

    async def adopt(self, owner: str, filename: str, purpose: str, tmp: Path, size: int, sha: str) -> FileRecord:
        """Take a finished scratch file into the store without copying it."""
        file_id = new_id("file-")
        self.blobs.adopt(tmp, file_id)
        return await self.store.add_file(FileRecord(id=file_id, owner=owner, filename=filename, bytes=size,
                                                    purpose=purpose, sha256=sha, created_at=int(time.time())))

    async def get(self, owner: str, file_id: str) -> FileRecord:
        record = await self.store.get_file(owner, file_id)
        if record is None:
            raise NotFound(f"No such File object: {file_id}", param="file_id")
        return record

    async def page(self, owner: str, *, purpose: str | None, limit: int, order: str, after: str | None) -> Page:
        return await self.store.list_files(owner, purpose=purpose, limit=limit, order=order, after=after)

    async def delete(self, owner: str, file_id: str) -> None:
        await self.get(owner, file_id)
        await self.store.delete_file(owner, file_id)
        self.blobs.delete(file_id)

    def content_path(self, record: FileRecord) -> Path:
        path = self.blobs.path(record.id)
        if not path.is_file():
            raise NotFound(f"The content of {record.id} is missing from the file store.", param="file_id")
        return path
