"""/v1/threads/{thread_id}/code_interpreter: the run engine's entry point, one sandbox per thread."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from ..calls import CallRun
from ..errors import BadRequest, NotFound
from ..logs import REQUEST_LOG, RequestLog
from ..notebook import MEDIA_TYPE
from ..records import ContainerRecord
from ..responses import citations
from ..schemas import THREAD_ID, AnnotateRequest, ThreadCallRequest, container_object, list_object
from .calling import CALL_RESPONSES, View, call_view, respond
from .context import Order, Services, owner_of

__all__ = ["THREAD_CALLS", "router", "start_thread_call"]

router = APIRouter(prefix="/v1/threads/{thread_id}/code_interpreter", tags=["threads"])
Owner = Annotated[str, Depends(owner_of)]
ThreadId = Annotated[str, Path(pattern=THREAD_ID, description="Any id of up to 128 [A-Za-z0-9_-]")]


def _services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


@router.post("/calls", summary="Run code in the thread's sandbox, creating it on first use", response_model=None,
             responses=CALL_RESPONSES)
async def thread_call(request: Request, owner: Owner, thread_id: ThreadId, body: ThreadCallRequest) -> Response:
    services = _services(request)
    run = await start_thread_call(services, owner, thread_id, body, request.scope.get(REQUEST_LOG))
    return await respond(services, run, body, call_view(request, owner, body.format, body.image_url))


# Where the route above is served; gateway/routes/lane.py serves it first, without FastAPI's layers.
THREAD_CALLS = f"{router.prefix}/calls"


async def start_thread_call(services: Services, owner: str, thread_id: str, body: ThreadCallRequest,
                            request_log: RequestLog | None = None) -> CallRun:
    """The call a validated request asks for, started in the thread's sandbox (created on first use)."""
    containers = services.containers
    if not body.input.strip():  # refuse before the thread's sandbox is created, not after
        raise BadRequest("'input' must contain code to run.", param="input")
    file_ids, restored = list(body.file_ids), None
    if isinstance(body.container, str):  # an explicit container, as the Responses tool allows
        record = await containers.get(owner, body.container)
        await containers.check_file_ids(owner, file_ids)
        session, restored = await containers.lease_awake(record)
    else:  # "auto", the default: the thread's active container, or a new one
        memory_limit = body.container.memory_limit if body.container else None
        if body.container:
            file_ids = list(dict.fromkeys([*body.container.file_ids, *file_ids]))
        if memory_limit is not None:
            containers.check_memory_limit(memory_limit)
        await containers.check_file_ids(owner, file_ids)
        record, session, restored = await containers.thread_session(owner, thread_id, memory_limit=memory_limit)
    return await services.calls.start(owner, record, session, code=body.input, file_ids=file_ids,
                                      timeout=body.timeout, thread_id=thread_id, restored=restored,
                                      stream=body.stream, background=body.background, request_log=request_log)


async def _thread_container(services: Services, owner: str, thread_id: str) -> ContainerRecord:
    record = await services.containers.store.container_for_thread(owner, thread_id)
    if record is None or record.status == "deleted":
        raise NotFound(f"Thread {thread_id} has no code interpreter sandbox.", param="thread_id")
    return record


@router.get("/calls", summary="List the calls in the thread's sandbox, oldest first")
async def list_thread_calls(request: Request, owner: Owner, thread_id: ThreadId, view: View,
                            limit: Annotated[int, Query(ge=1, le=100)] = 20, order: Order = "asc",
                            after: str | None = None) -> dict[str, Any]:
    services = _services(request)
    record = await _thread_container(services, owner, thread_id)
    page = await services.calls.history(record, limit=limit, order=order, after=after)
    return list_object([await view.call(body) for body in page.data], page.has_more)


@router.get("/calls/{call_id}", summary="Retrieve one call in the thread's sandbox (in progress: its outputs so far)")
async def retrieve_thread_call(request: Request, owner: Owner, thread_id: ThreadId, call_id: str,
                               view: View) -> dict[str, Any]:
    services = _services(request)
    return await view.call(await services.calls.get(await _thread_container(services, owner, thread_id), call_id))


@router.post("/calls/{call_id}/cancel", summary="Cancel a running call in the thread's sandbox")
async def cancel_thread_call(request: Request, owner: Owner, thread_id: ThreadId, call_id: str,
                             view: View) -> dict[str, Any]:
    services = _services(request)
    record = await _thread_container(services, owner, thread_id)
    return await view.call(await services.calls.cancel(record, call_id))


@router.get("", summary="The thread's sandbox")
async def get_thread(request: Request, owner: Owner, thread_id: ThreadId) -> dict[str, Any]:
    record = await _services(request).containers.store.container_for_thread(owner, thread_id)
    if record is None or record.status == "deleted":
        raise NotFound(f"Thread {thread_id} has no code interpreter sandbox.", param="thread_id")
    return {"thread_id": thread_id, "container": container_object(record)}


@router.delete("", summary="End the thread's sandbox")
async def delete_thread(request: Request, owner: Owner, thread_id: ThreadId) -> dict[str, Any]:
    await _services(request).containers.delete_thread(owner, thread_id)
    return {"thread_id": thread_id, "object": "thread.code_interpreter.deleted", "deleted": True}


@router.post("/annotations", summary="file_path annotations for the sandbox: links in a message")
async def annotate(request: Request, owner: Owner, thread_id: ThreadId, body: AnnotateRequest) -> dict[str, Any]:
    services = _services(request)
    record = await services.containers.store.container_for_thread(owner, thread_id)
    annotations = await services.calls.annotate(record, body.text)
    if body.format == "responses" and record is not None:
        annotations = citations(annotations, record.id)
    return {"text": body.text, "annotations": annotations}


@router.get("/notebook", summary="The thread's calls as a Jupyter notebook (nbformat 4)", response_class=JSONResponse)
async def thread_notebook(request: Request, owner: Owner, thread_id: ThreadId) -> JSONResponse:
    services = _services(request)
    record = await services.containers.store.container_for_thread(owner, thread_id)
    if record is None or record.status == "deleted":
        raise NotFound(f"Thread {thread_id} has no code interpreter sandbox.", param="thread_id")
    return JSONResponse(await services.calls.notebook(owner, record), media_type=MEDIA_TYPE)
