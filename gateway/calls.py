"""Code-interpreter calls: run code in a container and shape what it did as an Assistants run step."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any
from urllib.parse import unquote

import sandbox

from .container_files import ContainerFiles
from .containers import ContainerService
from .errors import BadRequest, Conflict, NotFound, public_message
from .files import FileService
from .logs import RequestLog
from .notebook import Cell, cell_from_call, notebook
from .outcomes import error_of, stopped_error
from .records import ContainerRecord, Page, new_id
from .responses import call_id_of
from .revival import Restored
from .store import Store
from .transfer import keep_file

__all__ = ["CallRun", "CallService", "annotate"]

log = logging.getLogger("codeinterp.gateway")

RESTORED = ("[This sandbox had expired and was started again: Python variables were reset, "
            "but the files in /mnt/data are in place.]")
WAKE_FAILED = ("[This sandbox had hibernated, but its memory could not be restored ({reason}). It was "
               "started again: Python variables were reset, but the files in /mnt/data are in place.]")
DELETED = {"code": "container_deleted",
           "message": "The container was deleted during the call; the execution was interrupted."}
_RICH = ("text/html", "image/svg+xml", "application/json")
_LINK = re.compile(r"sandbox:(/mnt/data/[^\s()\[\]<>\"'`]+)")
# A call that is neither streamed nor in the background and ends within this many seconds is written
# once, when it ends (before its response); a longer one is first recorded as in progress, so that a
# crash meanwhile leaves a row that the next start marks incomplete. Streamed and background calls are
# recorded at once: their id is already out.
IN_PROGRESS_AFTER = 0.2
PROGRESS_INTERVAL = 0.5  # seconds between two writes of a background call's partial body
SHUTDOWN_INTERRUPT_WAIT = 20.0  # seconds shutdown waits for interrupted calls to record their end


@dataclass
class CallRun:
    """One call in flight: its deltas as they happen (queued only when ``streamed``), and the finished call."""

    id: str
    code: str
    container_id: str
    thread_id: str | None
    created_at: int
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    deltas: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    rich: list[dict[str, Any]] = field(default_factory=list)
    logs_index: int | None = None
    log_parts: list[str] = field(default_factory=list)  # joined once per body: appending is linear
    restored: Restored | None = None  # the sandbox had gone idle: woken with its memory, or its files
    streamed: bool = False  # someone reads ``deltas``; otherwise nothing is queued (they would pile up)
    background: bool = False  # runs on without a client; its partial body is written as it grows
    stop_reason: str | None = None  # "cancelled" or "shutdown" when the gateway stopped it on purpose
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # outputs grew since the last write
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # set once its end is about to be recorded
    deleted: bool = False  # its container was deleted while it ran
    task: asyncio.Task[dict[str, Any]] | None = None
    progress: asyncio.Task[None] | None = None
    recorded: bool = False  # its in-progress row is written
    recording: asyncio.Task[None] | None = None  # writing it, late (IN_PROGRESS_AFTER)
    record_timer: asyncio.TimerHandle | None = None
    request_log: RequestLog | None = None  # the line of the request that waits for the call's end

    def container_deleted(self) -> None:
        self.deleted = True
        self.stop.set()

    def tool_call(self, outputs: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "type": "code_interpreter",
                "code_interpreter": {"input": self.code, "outputs": outputs}}

    def body(self, status: str, error: dict[str, str] | None = None, files: Sequence[dict[str, Any]] = (),
             completed_at: int | None = None, execution_count: int | None = None) -> dict[str, Any]:
        if self.logs_index is not None:
            self.outputs[self.logs_index]["logs"] = "".join(self.log_parts)
        return {**self.tool_call(self.outputs), "status": status, "error": error,
                "container_id": self.container_id, "thread_id": self.thread_id, "created_at": self.created_at,
                "completed_at": completed_at, "files": list(files), "rich_outputs": self.rich,
                "execution_count": execution_count, "session_restored": self.restored is not None,
                "restored": self.restored.kind if self.restored else None}

    def delta(self, output: dict[str, Any]) -> dict[str, Any]:
        return {"index": 0, "type": "code_interpreter", "code_interpreter": {"outputs": [output]}}

    def emit(self, delta: dict[str, Any] | None) -> None:
        """Queue a delta for the stream (None ends it), if there is one."""
        if self.streamed:
            self.deltas.put_nowait(delta)


class CallService:
    def __init__(self, store: Store, files: FileService, containers: ContainerService,
                 container_files: ContainerFiles, default_timeout: float, max_timeout: float) -> None:
        self.store, self.files, self.containers, self.container_files = store, files, containers, container_files
        self.default_timeout, self.max_timeout = default_timeout, max_timeout
        self._running: dict[str, CallRun] = {}  # by call id, until the call's end is recorded

    async def start(self, owner: str, record: ContainerRecord, session: sandbox.Session, *, code: str,
                    file_ids: Sequence[str], timeout: float | None, thread_id: str | None = None,
                    restored: Restored | None = None, stream: bool = False, background: bool = False,
                    request_log: RequestLog | None = None) -> CallRun:
        """Validate, place files, and start running it; a streamed or background call is recorded as in
        progress at once, another one only if it runs longer than IN_PROGRESS_AFTER (see there).

        ``request_log``: the log line of the request that answers with the whole call, which then
        carries the call's end; otherwise (streamed, background, no request) the end has its own line.

        ``session`` is leased by the caller; the lease is released when the call ends.
        """
        run: CallRun | None = None
        try:
            if not code.strip():
                raise BadRequest("'input' must contain code to run.", param="input")
            if timeout is not None and timeout <= 0:
                raise BadRequest("'timeout' must be a positive number of seconds.", param="timeout")
            seconds = min(timeout or self.default_timeout, self.max_timeout)
            # No touch here: the lease keeps the sandbox from expiring, and the end of the call touches it.
            await self.container_files.place_missing(owner, record, session, file_ids)
            run = CallRun(id=new_id("call_"), code=code, container_id=record.id, thread_id=thread_id,
                          created_at=int(time.time()), restored=restored, streamed=stream, background=background,
                          request_log=None if stream or background else request_log)
            if stream or background:
                await self.store.add_call(run.id, record.id, "in_progress", run.body("in_progress"),
                                          node=self.containers.node)
                run.recorded = True
            else:
                run.record_timer = asyncio.get_running_loop().call_later(
                    IN_PROGRESS_AFTER, self._record_late, run, record.id)
            run.emit({"index": 0, "id": run.id, "type": "code_interpreter",
                                   "code_interpreter": {"input": code, "outputs": []}})
            if restored is not None and restored.kind == "files":  # woken with its memory: nothing to say
                text = WAKE_FAILED.format(reason=restored.reason) if restored.reason else RESTORED
                await self._consume(owner, run, sandbox.Notice(text))
            # A delete from here on interrupts the call; one already under way stops it before it starts.
            unwatch = self.containers.on_delete(record.id, run.container_deleted)
            run.task = asyncio.create_task(self._run(owner, record, session, run, seconds, unwatch))
            self._running[run.id] = run
            if background:
                run.progress = asyncio.create_task(self._save_progress(run))
        except BaseException:
            if run is not None and run.record_timer is not None:
                run.record_timer.cancel()
            self.containers.release(record.id)
            raise
        return run

    def _record_late(self, run: CallRun, container_id: str) -> None:
        async def record() -> None:
            try:
                await self.store.add_call(run.id, container_id, "in_progress", run.body("in_progress"),
                                          node=self.containers.node)
                run.recorded = True
            except Exception:  # the end of the call writes it whole instead
                log.exception("could not record a call in progress", extra={"call_id": run.id})

        run.recording = asyncio.create_task(record())

    async def _run(self, owner: str, record: ContainerRecord, session: sandbox.Session, run: CallRun,
                   timeout: float, unwatch: Callable[[], None]) -> dict[str, Any]:
        try:
            return await self._execute(owner, record, session, run, timeout)
        finally:
            unwatch()
            self._running.pop(run.id, None)
            self.containers.release(record.id)

    async def _save_progress(self, run: CallRun) -> None:
        """Write a background call's partial body as it grows, so a crash leaves its logs so far."""
        while not run.ended.is_set():
            await run.changed.wait()
            if run.ended.is_set():
                return
            run.changed.clear()
            await self.store.finish_call(run.id, "in_progress", run.body("in_progress"))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.ended.wait(), PROGRESS_INTERVAL)

    async def _finish(self, run: CallRun, body: dict[str, Any], container_id: str | None = None,
                      last_active_at: float | None = None) -> None:
        """Record the call's end, after any progress write in flight, so the end is the last write: an
        update of its in-progress row, or the whole row in one insert."""
        run.ended.set()
        run.changed.set()
        if run.record_timer is not None:
            run.record_timer.cancel()
        if run.recording is not None:
            await asyncio.shield(run.recording)  # never two inserts of one id
        if run.progress is not None:
            with contextlib.suppress(Exception):
                await run.progress
        await self.store.finish_call(run.id, body["status"], body, container_id, last_active_at,
                                     insert_at=None if run.recorded else run.created_at, node=self.containers.node)

    async def _execute(self, owner: str, record: ContainerRecord, session: sandbox.Session, run: CallRun,
                       timeout: float) -> dict[str, Any]:
        started = time.monotonic()
        # Outputs arrive in order, then None once the execution is done (its done callback runs after
        # every output it sank): one consumer, no task per output.
        raw: asyncio.Queue[sandbox.Output | None] = asyncio.Queue()
        execution = asyncio.ensure_future(
            session.execute(run.code, timeout=timeout, on_output=raw.put_nowait, stop=run.stop))
        execution.add_done_callback(lambda _: raw.put_nowait(None))
        try:
            try:
                while (output := await raw.get()) is not None:
                    await self._consume(owner, run, output)
            finally:
                # If consuming failed or we were cancelled, the code must not run on detached:
                # cancelling the execution interrupts the kernel (Session.execute sets its stop).
                if not execution.done():
                    execution.cancel()
            result = execution.result()
            if run.deleted and result.outcome is sandbox.Outcome.CANCELLED:
                # Its files went with the container: nothing to collect.
                body = run.body("incomplete", DELETED, (), int(time.time()), result.execution_count)
            else:
                files = await self._collect(owner, record, session, result.files)
                code, message = error_of(result)
                if result.outcome is sandbox.Outcome.CANCELLED and run.stop_reason is not None:
                    code, message = stopped_error(run.stop_reason, result)
                status = ("completed" if result.outcome in (sandbox.Outcome.OK, sandbox.Outcome.ERROR)
                          else "incomplete")
                body = run.body(status, {"code": code, "message": message} if code else None, files,
                                int(time.time()), result.execution_count)
        except BaseException as exc:
            if not isinstance(exc, sandbox.SandboxError) and not (run.deleted and isinstance(exc, Exception)):
                body = run.body("failed", {"code": "sandbox_error", "message": "internal error"}, (),
                                int(time.time()))
                await asyncio.shield(self._finish(run, body, record.id))
                run.emit(None)
                raise
            # The sandbox went away under the call (a delete that could not wait, or Docker itself):
            # the tenant is told what happened in our words; the detail is for the operator.
            log.warning("call failed", extra={"call_id": run.id, "container_id": record.id,
                                              "docker_id": record.docker_id, "error": type(exc).__name__,
                                              "detail": str(exc)})
            if run.deleted:
                body = run.body("incomplete", DELETED, (), int(time.time()))
            else:
                body = run.body("failed", {"code": "sandbox_error", "message": public_message(exc)}, (),
                                int(time.time()))
        await self._finish(run, body, record.id, time.time())
        duration_ms = round((time.monotonic() - started) * 1000)
        if run.request_log is None or not run.request_log.add({
                "call_id": run.id, "container_id": record.id, "call_status": body["status"],
                "call_duration_ms": duration_ms, "outputs": len(run.outputs), "files": len(body["files"])}):
            log.info("call finished", extra={"call_id": run.id, "container_id": record.id, "status": body["status"],
                                             "duration_ms": duration_ms, "outputs": len(run.outputs),
                                             "files": len(body["files"])})
        run.emit(None)
        return body

    async def _consume(self, owner: str, run: CallRun, output: sandbox.Output) -> None:
        """Turn one sandbox output into call outputs, in order of first appearance."""
        if isinstance(output, sandbox.Display):
            image = output.image
            if image is not None:
                await self._image(owner, run, *image)
                return
            for mime in _RICH:
                if mime in output.data:
                    run.rich.append({"index": len(run.rich), "mime_type": mime, "data": output.data[mime]})
                    break
        text = sandbox.log_fragment(output, run.log_parts[-1] if run.log_parts else "")
        if not text:
            return
        if run.logs_index is None:
            run.logs_index = len(run.outputs)
            run.outputs.append({"type": "logs", "logs": ""})
        run.log_parts.append(text)
        run.changed.set()
        run.emit(run.delta({"index": run.logs_index, "type": "logs", "logs": text}))

    async def _image(self, owner: str, run: CallRun, extension: str, data: bytes) -> None:
        index = len(run.outputs)
        stored = await self.files.store_file(owner, f"{run.id}-{index}.{extension}", "assistants_output",
                                             BytesIO(data))
        item = {"type": "image", "image": {"file_id": stored.id}}
        run.outputs.append(item)
        run.changed.set()
        run.emit(run.delta({"index": index, **item}))

    async def _collect(self, owner: str, record: ContainerRecord, session: sandbox.Session,
                       changed: Sequence[sandbox.FileInfo]) -> list[dict[str, Any]]:
        """Store every file the call created or changed; the latest version of a path wins."""
        if not changed:
            return []
        known = {row.path: row for row in await self.store.container_files(record.id)}
        entries = []
        for info in changed:
            if info.size > self.files.max_bytes:
                continue  # over the size cap: listed in /mnt/data, not stored
            row = await keep_file(self.store, self.files, record, session, info, known.get(info.sandbox_path))
            if row is not None and row.file_id is not None:
                entries.append({"file_id": row.file_id, "path": row.path, "text": f"sandbox:{row.path}",
                                "bytes": row.bytes})
        return entries

    async def wait(self, run: CallRun) -> dict[str, Any]:
        assert run.task is not None
        return await asyncio.shield(run.task)

    def _live(self, record: ContainerRecord, call_id: str) -> CallRun | None:
        run = self._running.get(call_id)
        return run if run is not None and run.container_id == record.id else None

    async def get(self, record: ContainerRecord, call_id: str) -> dict[str, Any]:
        """The call; one still running shows its outputs so far (``ci_`` ids name the same call)."""
        call_id = call_id_of(call_id)
        if (run := self._live(record, call_id)) is not None:
            return run.body("in_progress")
        call = await self.store.get_call(record.id, call_id)
        if call is None:
            raise NotFound(f"No such call: {call_id}", param="call_id")
        return call.body

    async def history(self, record: ContainerRecord, *, limit: int, order: str,
                      after: str | None) -> Page:
        page = await self.store.list_calls(record.id, limit=limit, order=order,
                                           after=call_id_of(after) if after else None)
        bodies = [run.body("in_progress") if (run := self._live(record, c.id)) else c.body for c in page.data]
        return Page(data=bodies, has_more=page.has_more)

    async def cancel(self, record: ContainerRecord, call_id: str) -> dict[str, Any]:
        """Interrupt a running call; it ends incomplete (``cancelled``) with its outputs and files so far."""
        call_id = call_id_of(call_id)
        run = self._live(record, call_id)
        if run is None:
            call = await self.store.get_call(record.id, call_id)
            if call is None:
                raise NotFound(f"No such call: {call_id}", param="call_id")
            if call.status == "in_progress" and call.node not in (None, self.containers.node):
                await self.containers.check_holder(record)  # it runs on another gateway: cancel it there
            raise Conflict(f"Call {call_id} is {call.status}; only a call in progress can be cancelled.",
                           param="call_id")
        run.stop_reason = run.stop_reason or "cancelled"
        run.stop.set()
        log.info("call cancelled", extra={"call_id": run.id, "container_id": record.id})
        return await self.wait(run)

    async def shutdown(self, grace: float) -> None:
        """Let running calls finish for ``grace`` seconds, then interrupt the rest and record them."""
        tasks = {run.task for run in self._running.values() if run.task is not None}
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for run in list(self._running.values()):
            run.stop_reason = "shutdown"
            run.stop.set()
        if pending:
            await asyncio.wait(pending, timeout=SHUTDOWN_INTERRUPT_WAIT)

    async def notebook(self, owner: str, record: ContainerRecord) -> dict[str, Any]:
        """Every call of a container, oldest first, as an nbformat 4 notebook with its images inlined."""

        async def read_image(file_id: str) -> bytes | None:
            try:
                path = self.files.content_path(await self.files.get(owner, file_id))
            except NotFound:
                return None
            return await asyncio.to_thread(path.read_bytes)

        cells: list[Cell] = []
        after: str | None = None
        while True:
            page = await self.store.list_calls(record.id, limit=100, order="asc", after=after)
            for call in page.data:
                cells.append(await cell_from_call(call.body, read_image))
            if not page.has_more or not page.data:
                return notebook(cells)
            after = page.data[-1].id

    async def annotate(self, record: ContainerRecord | None, text: str) -> list[dict[str, Any]]:
        if record is None:
            return []
        rows = await self.store.container_files(record.id)
        return annotate(text, {row.path: row.file_id for row in rows if row.file_id})


def annotate(text: str, files_by_path: dict[str, str]) -> list[dict[str, Any]]:
    """A file_path annotation for each sandbox: link that names a known file; others are left alone."""
    annotations = []
    for match in _LINK.finditer(text):
        path = match.group(1).rstrip(".,;:!?")
        file_id = files_by_path.get(path) or files_by_path.get(unquote(path))
        if file_id is None:
            continue
        link = f"sandbox:{path}"
        annotations.append({"type": "file_path", "text": link, "start_index": match.start(),
                            "end_index": match.start() + len(link), "file_path": {"file_id": file_id}})
    return annotations

