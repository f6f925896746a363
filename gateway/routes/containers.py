"""/v1/containers: the OpenAI Containers API, plus calls and their history on a container."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import ValidationError

from ..errors import BadRequest
from ..files import checked_filename
from ..logs import REQUEST_LOG
from ..notebook import MEDIA_TYPE
from ..schemas import (
    CallRequest,
    CreateContainerFileRequest,
    CreateContainerRequest,
    container_file_object,
    container_object,
    list_object,
)
from .calling import CALL_RESPONSES, View, call_view, respond
from .context import Order, Services, owner_of
from .files import content_headers

__all__ = ["router"]

router = APIRouter(prefix="/v1/containers", tags=["containers"])
Owner = Annotated[str, Depends(owner_of)]
Limit = Annotated[int, Query(ge=1, le=100)]


def _services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


@router.post("", summary="Create a container")
async def create_container(request: Request, owner: Owner, body: CreateContainerRequest) -> dict[str, Any]:
    minutes = body.expires_after.minutes if body.expires_after else 20
    record = await _services(request).containers.create(
        owner, name=body.name, file_ids=body.file_ids, expires_minutes=minutes, memory_limit=body.memory_limit)
    return container_object(record)


@router.get("", summary="List containers")
async def list_containers(request: Request, owner: Owner, limit: Limit = 20, order: Order = "desc",
                          after: str | None = None) -> dict[str, Any]:
    page = await _services(request).containers.page(owner, limit=limit, order=order, after=after)
    return list_object([container_object(r) for r in page.data], page.has_more)


@router.get("/{container_id}", summary="Retrieve a container")
async def retrieve_container(request: Request, owner: Owner, container_id: str) -> dict[str, Any]:
    containers = _services(request).containers
    return container_object(await containers.touch(await containers.get(owner, container_id)))


@router.delete("/{container_id}", summary="Delete a container")
async def delete_container(request: Request, owner: Owner, container_id: str) -> dict[str, Any]:
    await _services(request).containers.delete(owner, container_id)
    return {"id": container_id, "object": "container.deleted", "deleted": True}


@router.post("/{container_id}/files", summary="Add a file to a container",
             openapi_extra={"requestBody": {"content": {
                 "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
                     "file": {"type": "string", "format": "binary"}}}},
                 "application/json": {"schema": CreateContainerFileRequest.model_json_schema()}}}})
async def create_container_file(request: Request, owner: Owner, container_id: str) -> dict[str, Any]:
    services = _services(request)
    containers, mnt = services.containers, services.container_files
    record = await containers.touch(await containers.get(owner, container_id))
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise BadRequest("Missing required parameter: 'file' (a multipart file part).", param="file")
        row = await mnt.add_upload(owner, record, checked_filename(upload.filename), upload.file)
    elif content_type.startswith("application/json"):
        try:
            body = CreateContainerFileRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            raise BadRequest("Send JSON {\"file_id\": \"file-...\"}: " + exc.errors()[0]["msg"],
                             param="file_id") from exc
        row = await mnt.add_stored_file(owner, record, body.file_id)
    else:
        raise BadRequest("Send the file as multipart/form-data ('file') or JSON {\"file_id\": ...}.")
    return container_file_object(row)


@router.get("/{container_id}/files", summary="List the files in a container's /mnt/data")
async def list_container_files(request: Request, owner: Owner, container_id: str, limit: Limit = 20,
                               order: Order = "desc", after: str | None = None) -> dict[str, Any]:
    services = _services(request)
    containers, mnt = services.containers, services.container_files
    record = await containers.touch(await containers.get(owner, container_id))
    rows = await mnt.list_files(record)
    if order == "desc":
        rows.reverse()
    ids = [r.id for r in rows]
    start = ids.index(after) + 1 if after in ids else 0
    page = rows[start:start + limit]
    return list_object([container_file_object(r) for r in page], start + limit < len(rows))


@router.get("/{container_id}/files/{file_id}", summary="Retrieve a container file")
async def retrieve_container_file(request: Request, owner: Owner, container_id: str,
                                  file_id: str) -> dict[str, Any]:
    services = _services(request)
    containers, mnt = services.containers, services.container_files
    record = await containers.touch(await containers.get(owner, container_id))
    return container_file_object(await mnt.get_file(record, file_id))


@router.get("/{container_id}/files/{file_id}/content", summary="Download a container file",
            response_class=FileResponse)
async def container_file_content(request: Request, owner: Owner, container_id: str, file_id: str,
                                 background: BackgroundTasks) -> FileResponse:
    services = _services(request)
    containers, mnt = services.containers, services.container_files
    record = await containers.touch(await containers.get(owner, container_id))
    row = await mnt.get_file(record, file_id)
    path, scratch = await mnt.export(record, row)
    if scratch:
        background.add_task(path.unlink, missing_ok=True)
    media, headers = content_headers(row.path.rsplit("/", 1)[-1])
    return FileResponse(path, media_type=media, headers=headers)


@router.delete("/{container_id}/files/{file_id}", summary="Delete a container file")
async def delete_container_file(request: Request, owner: Owner, container_id: str,
                                file_id: str) -> dict[str, Any]:
    services = _services(request)
    containers, mnt = services.containers, services.container_files
    record = await containers.touch(await containers.get(owner, container_id))
    await mnt.delete_file(record, await mnt.get_file(record, file_id))
    return {"id": file_id, "object": "container.file.deleted", "deleted": True}


@router.post("/{container_id}/calls", summary="Run code in a container", response_model=None,
             responses=CALL_RESPONSES)
async def create_call(request: Request, owner: Owner, container_id: str, body: CallRequest) -> Response:
    services = _services(request)
    record = await services.containers.get(owner, container_id)
    session, restored = await services.containers.lease_awake(record)
    run = await services.calls.start(owner, record, session, code=body.input, restored=restored,
                                     file_ids=body.file_ids, timeout=body.timeout, stream=body.stream,
                                     background=body.background, request_log=request.scope.get(REQUEST_LOG))
    return await respond(services, run, body, call_view(request, owner, body.format, body.image_url))


@router.get("/{container_id}/calls", summary="List a container's calls, oldest first")
async def list_calls(request: Request, owner: Owner, container_id: str, view: View, limit: Limit = 20,
                     order: Order = "asc", after: str | None = None) -> dict[str, Any]:
    services = _services(request)
    record = await services.containers.get(owner, container_id)
    page = await services.calls.history(record, limit=limit, order=order, after=after)
    return list_object([await view.call(body) for body in page.data], page.has_more)


@router.get("/{container_id}/calls/{call_id}", summary="Retrieve one call (in progress: its outputs so far)")
async def retrieve_call(request: Request, owner: Owner, container_id: str, call_id: str,
                        view: View) -> dict[str, Any]:
    services = _services(request)
    record = await services.containers.get(owner, container_id)
    return await view.call(await services.calls.get(record, call_id))


@router.post("/{container_id}/calls/{call_id}/cancel", summary="Cancel a running call: interrupt the kernel")
async def cancel_call(request: Request, owner: Owner, container_id: str, call_id: str,
                      view: View) -> dict[str, Any]:
    services = _services(request)
    record = await services.containers.get(owner, container_id)
    return await view.call(await services.calls.cancel(record, call_id))


@router.get("/{container_id}/notebook", summary="The container's calls as a Jupyter notebook (nbformat 4)",
            response_class=JSONResponse)
async def container_notebook(request: Request, owner: Owner, container_id: str) -> JSONResponse:
    services = _services(request)
    record = await services.containers.get(owner, container_id)
    return JSONResponse(await services.calls.notebook(owner, record), media_type=MEDIA_TYPE)
