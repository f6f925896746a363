"""/v1/files: the OpenAI Files API."""

from __future__ import annotations

import mimetypes
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse

from ..schemas import file_object, list_object
from .context import Order, Services, owner_of

__all__ = ["router"]

router = APIRouter(prefix="/v1/files", tags=["files"])
Owner = Annotated[str, Depends(owner_of)]


def _services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(1 << 20):
        yield chunk


def content_headers(filename: str) -> tuple[str, dict[str, str]]:
    """Content-Type from the name, and a Content-Disposition no file name can inject into."""
    media = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\;' else "_" for c in filename) or "file"
    disposition = f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"
    return media, {"Content-Disposition": disposition, "X-Content-Type-Options": "nosniff"}


@router.post("", summary="Upload a file")
async def upload_file(request: Request, owner: Owner, file: Annotated[UploadFile, File()],
                      purpose: Annotated[str, Form()]) -> dict[str, Any]:
    record = await _services(request).files.upload(owner, file.filename, purpose, _chunks(file))
    return file_object(record)


@router.get("", summary="List files")
async def list_files(request: Request, owner: Owner, purpose: str | None = None,
                     limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000, order: Order = "desc",
                     after: str | None = None) -> dict[str, Any]:
    page = await _services(request).files.page(owner, purpose=purpose, limit=limit, order=order, after=after)
    return list_object([file_object(r) for r in page.data], page.has_more)


@router.get("/{file_id}", summary="Retrieve a file")
async def retrieve_file(request: Request, owner: Owner, file_id: str) -> dict[str, Any]:
    return file_object(await _services(request).files.get(owner, file_id))


@router.delete("/{file_id}", summary="Delete a file")
async def delete_file(request: Request, owner: Owner, file_id: str) -> dict[str, Any]:
    await _services(request).files.delete(owner, file_id)
    return {"id": file_id, "object": "file", "deleted": True}


@router.get("/{file_id}/content", summary="Download a file's bytes", response_class=FileResponse)
async def file_content(request: Request, owner: Owner, file_id: str) -> FileResponse:
    services = _services(request)
    record = await services.files.get(owner, file_id)
    media, headers = content_headers(record.filename)
    return FileResponse(services.files.content_path(record), media_type=media, headers=headers)
