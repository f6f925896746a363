"""One Jupyter kernel connection: readiness, and one execute turned into outputs.

The kernel speaks the Jupyter messaging protocol over whatever transport the
connection info names (ipc for our containers). Output is collected under caps
so that a flood never grows this process's memory without bound.
"""

from __future__ import annotations

import asyncio
import queue
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jupyter_client.asynchronous.client import AsyncKernelClient

from ._backend import Limits
from ._errors import KernelStartError
from ._results import Display, ExecutionError, Notice, Output, Stream

__all__ = ["Collector", "KernelClient", "OutputSink", "Turn"]

OutputSink = Callable[[Output], None]
_POLL = 0.5  # seconds between liveness checks while the kernel is busy
# Run silently in every fresh kernel. ipykernel 7 stamps a thread's output with the parent header
# of whatever cell runs when it writes, so a thread left printing would leak into later calls. Each
# thread instead keeps the header of the cell that started it, and `follow` drops what is not ours.
_KERNEL_SETUP = """
def _codeinterp_attribute_threads():
    import sys, threading
    start = threading.Thread.start
    def start_in_cell(self, *args, **kwargs):
        streams = [(s, s.parent_header) for s in (sys.stdout, sys.stderr) if hasattr(s, "set_thread_parent")]
        run = self.run
        def run_in_cell():
            for stream, parent in streams:
                stream.set_thread_parent(parent)
            run()
        self.run = run_in_cell
        return start(self, *args, **kwargs)
    threading.Thread.start = start_in_cell
_codeinterp_attribute_threads()
del _codeinterp_attribute_threads

# Child processes inherit fds 1 and 2, whose output ipykernel stamps with the running cell: a
# background child would print into later calls. Each cell gets fresh pipes on fds 1 and 2, read by
# threads started in that cell (so stamped with it); a child keeps its own cell's pipe. At the end
# of a cell what its pipes hold is forwarded before the kernel reports idle.
def _codeinterp_cell_pipes():
    import codecs, fcntl, os, sys, termios, threading, time
    from IPython import get_ipython
    current = {}
    def pump(fd_read, stream, state):
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        while True:
            try:
                data = os.read(fd_read, 65536)
            except OSError:
                data = b""
            if not data:
                os.close(fd_read)
                return
            state["busy"] = True
            stream.write(decoder.decode(data))
            state["busy"] = False
    def fresh_pipes(*_):
        for fd, stream in ((1, sys.stdout), (2, sys.stderr)):
            r, w = os.pipe()
            os.dup2(w, fd)
            os.close(w)
            current[fd] = state = {"busy": False, "r": r}
            threading.Thread(target=pump, args=(r, stream, state), daemon=True).start()
    def drain(*_):
        deadline = time.monotonic() + 1.0
        for state in current.values():
            while time.monotonic() < deadline:
                try:
                    pending = int.from_bytes(fcntl.ioctl(state["r"], termios.FIONREAD, bytes(4)), "little")
                except OSError:
                    pending = 0
                if not pending and not state["busy"]:
                    break
                time.sleep(0.002)
    get_ipython().events.register("pre_run_cell", fresh_pipes)
    get_ipython().events.register("post_run_cell", drain)
_codeinterp_cell_pipes()
del _codeinterp_cell_pipes
"""


@dataclass
class Collector:
    """Outputs of one execution, in order, under the caps of ``Limits``."""

    limits: Limits
    sink: OutputSink | None = None
    outputs: list[Output] = field(default_factory=list)
    stream_bytes: int = 0
    display_bytes: int = 0
    displays: int = 0
    dropped_stream: int = 0
    execution_count: int | None = None
    _stream_notice: bool = False
    _display_notice: bool = False

    def _emit(self, output: Output) -> None:
        last = self.outputs[-1] if self.outputs else None
        if isinstance(output, Stream) and isinstance(last, Stream) and last.name == output.name:
            self.outputs[-1] = Stream(name=last.name, text=last.text + output.text)
        else:
            self.outputs.append(output)
        if self.sink is not None:
            self.sink(output)

    def notice(self, text: str) -> None:
        self._emit(Notice(text))

    def stream(self, name: str, text: str) -> None:
        size = len(text.encode("utf-8", "replace"))
        room = self.limits.max_stream_bytes - self.stream_bytes
        if room <= 0:
            self.dropped_stream += size
            return
        if size > room:
            text = text.encode("utf-8", "replace")[:room].decode("utf-8", "ignore")
            self.dropped_stream += size - room
            size = room
        self.stream_bytes += size
        self._emit(Stream(name="stderr" if name == "stderr" else "stdout", text=text))
        if self.stream_bytes >= self.limits.max_stream_bytes and not self._stream_notice:
            self._stream_notice = True
            self.notice(f"[output truncated: the {self.limits.max_stream_bytes} byte cap on "
                        "stdout/stderr was reached; the rest was dropped]")

    def display(self, data: Mapping[str, Any], metadata: Mapping[str, Any], is_result: bool) -> None:
        size = sum(len(v) if isinstance(v, str) else len(str(v)) for v in data.values())
        if size > self.limits.max_bundle_bytes:
            self.notice(f"[a {size} byte output ({', '.join(sorted(data))}) was dropped: over the "
                        f"{self.limits.max_bundle_bytes} byte cap for one output]")
            return
        if (self.displays >= self.limits.max_displays
                or self.display_bytes + size > self.limits.max_display_bytes):
            if not self._display_notice:
                self._display_notice = True
                self.notice("[further rich outputs were dropped: the cap on displays per execution "
                            "was reached]")
            return
        self.displays += 1
        self.display_bytes += size
        self._emit(Display(data=dict(data), metadata=dict(metadata), is_result=is_result))

    def error(self, content: Mapping[str, Any]) -> None:
        self._emit(ExecutionError(name=str(content.get("ename", "")), value=str(content.get("evalue", "")),
                                  traceback=tuple(str(t) for t in content.get("traceback", ()))))

    def handle(self, msg: Mapping[str, Any]) -> bool:
        """Take one iopub message; True once the kernel went idle."""
        kind, content = msg["msg_type"], msg["content"]
        if kind == "status":
            return bool(content.get("execution_state") == "idle")
        if kind == "stream":
            self.stream(content.get("name", "stdout"), content.get("text", ""))
        elif kind in ("display_data", "execute_result", "update_display_data"):
            self.display(content.get("data", {}), content.get("metadata", {}), kind == "execute_result")
        elif kind == "error":
            self.error(content)
        elif kind == "execute_input":
            self.execution_count = content.get("execution_count")
        return False


@dataclass
class Turn:
    """How the wait for one execution ended."""

    idle: bool  # the kernel reported idle for our request
    dead: bool = False  # the liveness check found the kernel gone


class KernelClient:
    """A client for one kernel, reconnectable after the kernel restarts."""

    def __init__(self, connection_info: Mapping[str, Any]) -> None:
        self._info = dict(connection_info)
        self._client = self._connect()

    def _connect(self) -> AsyncKernelClient:
        client = AsyncKernelClient()
        client.load_connection_info(self._info)  # type: ignore[arg-type]
        client.start_channels()
        return client

    def reconnect(self) -> None:
        self.close()
        self._client = self._connect()

    def close(self) -> None:
        try:
            self._client.stop_channels()
        except Exception:  # noqa: BLE001 - closing a half-open client must not mask the cause
            pass

    async def wait_ready(self, timeout: float, alive: Callable[[], Awaitable[bool]]) -> None:
        """Return once the kernel answers kernel_info; raise if it dies or stays silent."""
        deadline = time.monotonic() + timeout
        last_check = time.monotonic()
        shell_ready = False
        while time.monotonic() < deadline:
            self._client.kernel_info()
            try:
                if not shell_ready:
                    await self._client.get_shell_msg(timeout=0.2)
                    shell_ready = True
                # A SUB socket drops what was published before its subscription took: the kernel
                # is ready only once iopub delivers (the status of a kernel_info request).
                await self._client.get_iopub_msg(timeout=0.2)
                await self._drain_iopub()
                self._client.execute(_KERNEL_SETUP, silent=True, store_history=False)
                return
            except queue.Empty:
                pass
            if time.monotonic() - last_check > 1.0:
                last_check = time.monotonic()
                if not await alive():
                    raise KernelStartError("the kernel exited while starting")
        raise KernelStartError(f"the kernel did not answer within {timeout:.0f} s")

    async def _drain_iopub(self) -> None:
        try:
            while True:
                await self._client.get_iopub_msg(timeout=0)
        except queue.Empty:
            return

    def submit(self, code: str) -> str:
        return str(self._client.execute(code, store_history=True, allow_stdin=False, stop_on_error=False))

    async def follow(self, msg_id: str, collector: Collector, deadline: float,
                     alive: Callable[[], Awaitable[bool]], stop: asyncio.Event | None) -> Turn:
        """Feed the collector our request's iopub messages until idle, deadline, stop or death."""
        next_check = time.monotonic() + _POLL
        while True:
            now = time.monotonic()
            if now >= deadline or (stop is not None and stop.is_set()):
                return Turn(idle=False)
            try:
                msg = await self._client.get_iopub_msg(timeout=min(deadline, next_check) - now)
            except queue.Empty:
                msg = None
            if msg is not None:
                # Output of earlier requests (an interrupted cell, a background thread) is not ours.
                if msg.get("parent_header", {}).get("msg_id") == msg_id and collector.handle(msg):
                    await self._take_reply(msg_id)
                    return Turn(idle=True)
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + _POLL
                if not await alive():
                    return Turn(idle=False, dead=True)

    async def _take_reply(self, msg_id: str) -> None:
        try:
            while True:
                reply = await self._client.get_shell_msg(timeout=0.5)
                if reply["parent_header"].get("msg_id") == msg_id:
                    return
        except queue.Empty:
            return
