"""One Jupyter kernel connection: readiness, and one execute turned into outputs.

The kernel is reached through a ``KernelChannel`` (a relay beside it, over a
byte stream the backend opens). Output is collected under caps so that a flood
never grows this process's memory without bound, and in time linear in its size.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ._backend import Limits
from ._channel import KernelChannel, Message, Pipe
from ._errors import KernelStartError
from ._results import Display, ExecutionError, Notice, Output, Stream

__all__ = ["Collector", "KernelClient", "OutputSink", "Turn"]

OutputSink = Callable[[Output], None]
log = logging.getLogger("codeinterp.sandbox")
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
    """Outputs of one execution, in order, under the caps of ``Limits``.

    Consecutive pieces of one stream are kept as a list and joined once, when
    ``outputs`` is read: 200,000 small prints cost linear time, not quadratic.
    """

    limits: Limits
    sink: OutputSink | None = None
    stream_bytes: int = 0
    display_bytes: int = 0
    displays: int = 0
    dropped_stream: int = 0
    execution_count: int | None = None
    _done: list[Output] = field(default_factory=list)
    _tail_name: str | None = None
    _tail: list[str] = field(default_factory=list)
    _stream_notice: bool = False
    _display_notice: bool = False

    @property
    def outputs(self) -> list[Output]:
        self._close_tail()
        return self._done

    def _close_tail(self) -> None:
        if self._tail_name is not None:
            name: Literal["stdout", "stderr"] = "stderr" if self._tail_name == "stderr" else "stdout"
            self._done.append(Stream(name=name, text="".join(self._tail)))
            self._tail_name, self._tail = None, []

    def _emit(self, output: Output) -> None:
        if isinstance(output, Stream):
            if self._tail_name != output.name:
                self._close_tail()
                self._tail_name = output.name
            self._tail.append(output.text)
        else:
            self._close_tail()
            self._done.append(output)
        if self.sink is not None:
            try:
                self.sink(output)
            except Exception:  # the caller's sink failing must not lose the execution
                log.exception("an output sink failed; it gets no more outputs of this execution")
                self.sink = None

    @property
    def has_error(self) -> bool:
        return any(isinstance(o, ExecutionError) for o in self._done)

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

    def handle(self, msg: Message) -> bool:
        """Take one iopub message; True once the kernel went idle."""
        kind, content = msg.msg_type, msg.content
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
    dead: bool = False  # the kernel, or the channel to it, is gone


@dataclass
class _Watch:
    """One execution's routing: its collector, and whether the kernel went idle for it."""

    collector: Collector
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def on_message(self, msg: Message) -> None:
        if self.collector.handle(msg):
            self.idle.set()


class KernelClient:
    """A client for one kernel over a channel the backend opens; reconnectable after a restart."""

    def __init__(self, connect: Callable[[], Awaitable[Pipe]], key: str) -> None:
        self._connect = connect
        self._key = key
        self._channel: KernelChannel | None = None
        self._watches: dict[str, _Watch] = {}

    @property
    def channel(self) -> KernelChannel:
        if self._channel is None:
            raise KernelStartError("the kernel channel is not open")
        return self._channel

    async def open(self) -> None:
        self._channel = KernelChannel(await self._connect(), self._key)

    async def reconnect(self) -> None:
        await self.close()
        await self.open()

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        self._watches.clear()
        if channel is not None:
            await channel.aclose()

    async def wait_ready(self, timeout: float, alive: Callable[[], Awaitable[bool]], *, setup: bool = True) -> None:
        """Return once the kernel answers kernel_info on shell and on iopub; raise if it dies or stays silent.

        ``setup=False`` for a kernel that already ran the setup (one woken from hibernation).
        """
        deadline = time.monotonic() + timeout
        channel = self.channel
        await channel.ready(timeout)
        last_check = time.monotonic()
        while time.monotonic() < deadline:
            heard = asyncio.Event()
            msg_id = await channel.request("shell", "kernel_info_request", {}, listener=_setter(heard))
            # The relay's SUB socket drops what was published before its subscription took:
            # the kernel is ready only once iopub delivers (the status of a kernel_info request).
            if await channel.reply(msg_id, 1.0) is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(heard.wait(), 0.5)
            channel.forget(msg_id)
            if heard.is_set():
                if setup:
                    sent = await channel.request("shell", "execute_request", _execute_content(_KERNEL_SETUP, True))
                    channel.forget(sent)
                return
            if channel.closed.is_set() or time.monotonic() - last_check > 1.0:
                last_check = time.monotonic()
                if not await alive():
                    raise KernelStartError("the kernel exited while starting")
                if channel.closed.is_set():
                    raise KernelStartError("the channel to the kernel closed while it started")
        raise KernelStartError(f"the kernel did not answer within {timeout:.0f} s")

    async def submit(self, code: str, collector: Collector) -> str:
        watch = _Watch(collector)
        msg_id = await self.channel.request("shell", "execute_request", _execute_content(code, False),
                                            listener=watch.on_message)
        self._watches[msg_id] = watch
        return msg_id

    async def follow(self, msg_id: str, deadline: float, alive: Callable[[], Awaitable[bool]],
                     stop: asyncio.Event | None) -> Turn:
        """Wait until our request's idle, the deadline, ``stop``, or the kernel's death."""
        watch, channel = self._watches[msg_id], self.channel
        waits = [asyncio.ensure_future(watch.idle.wait()), asyncio.ensure_future(channel.closed.wait())]
        if stop is not None:
            waits.append(asyncio.ensure_future(stop.wait()))
        try:
            while True:
                if watch.idle.is_set():
                    await channel.reply(msg_id, 0.5)
                    channel.forget(msg_id)
                    self._watches.pop(msg_id, None)
                    return Turn(idle=True)
                now = time.monotonic()
                if now >= deadline or (stop is not None and stop.is_set()):
                    return Turn(idle=False)
                if channel.closed.is_set():
                    return Turn(idle=False, dead=True)
                await asyncio.wait(waits, timeout=min(deadline - now, _POLL), return_when=asyncio.FIRST_COMPLETED)
                if not watch.idle.is_set() and not await alive():
                    return Turn(idle=False, dead=True)
        finally:
            for wait in waits:
                wait.cancel()


def _setter(event: asyncio.Event) -> Callable[[Message], None]:
    return lambda _msg: event.set()


def _execute_content(code: str, silent: bool) -> dict[str, Any]:
    return {"code": code, "silent": silent, "store_history": not silent, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": False}
