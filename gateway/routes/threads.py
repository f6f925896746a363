"""/v1/threads/{thread_id}/code_interpreter: the run engine's entry point, one sandbox per thread."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse, Response

from ..errors import BadRequest, NotFound
from ..notebook import MEDIA_TYPE, cells_from_history, notebook
from ..schemas import THREAD_ID, AnnotateRequest, CallRequest, container_object
from .calling import CALL_RESPONSES, respond
from .context import Services, owner_of

__all__ = ["router"]

router = APIRouter(prefix="/v1/threads/{thread_id}/code_interpreter", tags=["threads"])
Owner = Annotated[str, Depends(owner_of)]
ThreadId = Annotated[str, Path(pattern=THREAD_ID, description="Any id of up to 128 [A-Za-z0-9_-]")]


def _services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


@router.post("/calls", summary="Run code in the thread's sandbox, creating it on first use", response_model=None,
             responses=CALL_RESPONSES)
async def thread_call(request: Request, owner: Owner, thread_id: ThreadId, body: CallRequest) -> Response:
    services = _services(request)
    if not body.input.strip():  # refuse before the thread's sandbox is created, not after
        raise BadRequest("'input' must contain code to run.", param="input")
    await services.containers.check_file_ids(owner, body.file_ids)
    record, session, restored = await services.containers.thread_session(owner, thread_id)
    run = await services.calls.start(owner, record, session, code=body.input, file_ids=body.file_ids,
                                     timeout=body.timeout, thread_id=thread_id, restored=restored,
                                     stream=body.stream)
    return await respond(services, run, body.stream)


@router.get("", summary="The thread's sandbox")
async def get_thread(request: Request, owner: Owner, thread_id: ThreadId) -> dict[str, Any]:
    record = await _services(request).containers.store.container_for_thread(owner, thread_id)
    if record is None or record.status == "deleted":
        raise NotFound(f"Thread {thread_id} has no code interpreter sandbox.", param="thread_id")
    return {"thread_id": thread_id, "container": container_object(record)}


@router.delete("", summary="End the thread's sandbox")
async def delete_thread(request: Request, owner: Owner, thread_id: ThreadId) -> dict[str, Any]:
    containers = _services(request).containers
    record = await containers.store.container_for_thread(owner, thread_id)
    if record is None or record.status == "deleted":
        raise NotFound(f"Thread {thread_id} has no code interpreter sandbox.", param="thread_id")
    await containers.delete(owner, record.id)
    return {"thread_id": thread_id, "object": "thread.code_interpreter.deleted", "deleted": True}


@router.post("/annotations", summary="file_path annotations for the sandbox: links in a message")
async def annotate(request: Request, owner: Owner, thread_id: ThreadId, body: AnnotateRequest) -> dict[str, Any]:
    services = _services(request)
    record = await services.containers.store.container_for_thread(owner, thread_id)
    return {"text": body.text, "annotations": await services.calls.annotate(record, body.text)}


@router.get("/notebook", summary="The thread's calls as a Jupyter notebook (nbformat 4)", response_class=JSONResponse)
async def thread_notebook(request: Request, owner: Owner, thread_id: ThreadId) -> JSONResponse:
    services = _services(request)
    record = await services.containers.store.container_for_thread(owner, thread_id)
    if record is None or record.status == "deleted":
        raise NotFound(f"Thread {thread_id} has no code interpreter sandbox.", param="thread_id")
    cells = await cells_from_history(services.containers.store, services.files, owner, record.id)
    return JSONResponse(notebook(cells), media_type=MEDIA_TYPE)
