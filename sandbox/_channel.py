"""The kernel channel: Jupyter messages over one byte stream to a relay beside the kernel.

A backend hands us a ``Pipe`` to a relay process running next to the kernel
(``sandbox/_inside/relay.py``). The relay forwards the kernel's ZeroMQ frames,
signatures included, so messages stay HMAC-signed with the host's own key from
end to end: we sign what we send and check the signature of what we receive.

Nothing here depends on a shared directory or a network between this process
and the kernel, so the same channel serves runc and gVisor, a local or a
remote Docker engine, and a kernel restored from a checkpoint.

Incoming messages are dispatched by the id of the request they answer, to a
callback registered before the request was sent: no queue per output, no task
per message, and nothing that arrives can be dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import struct
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from ._errors import KernelStartError

__all__ = ["CHANNELS", "DELIM", "HELLO", "READ_CHUNK", "Channel", "KernelChannel", "Message", "Pipe", "decode_frames",
           "encode_record", "sign"]

log = logging.getLogger("codeinterp.sandbox")

Channel = str  # "shell", "iopub", "stdin" or "control"
CHANNELS: tuple[Channel, ...] = ("shell", "iopub", "stdin", "control")  # record channel bytes 0..3
HELLO = 9
_LEN = struct.Struct(">I")
DELIM = b"<IDS|MSG>"
# What a pipe hands over at once. The reader dispatches a chunk's messages without yielding, so a
# chunk of small prints (~40 bytes each) must stay short work for the event loop other calls share.
READ_CHUNK = 1 << 16
_MAX_RECORD = 1 << 30  # a record longer than this means the stream is corrupt


def sign(key: bytes, *parts: bytes) -> bytes:
    """The hex HMAC-SHA256 of a message's header, parent, metadata and content frames."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        mac.update(part)
    return mac.hexdigest().encode()


def encode_record(channel: int, frames: list[bytes]) -> bytes:
    """One relay record: length, channel byte, then each frame with its length."""
    record = [b"", bytes((channel,))]
    for frame in frames:
        record += [_LEN.pack(len(frame)), frame]
    record[0] = _LEN.pack(sum(len(p) for p in record))
    return b"".join(record)


def decode_frames(body: bytes) -> tuple[int, list[bytes]]:
    """The channel byte and frames of one record's body (without its length)."""
    frames, pos = [], 1
    while pos < len(body):
        (size,) = _LEN.unpack_from(body, pos)
        frames.append(body[pos + 4:pos + 4 + size])
        pos += 4 + size
    return body[0], frames


class Pipe(Protocol):
    """A byte stream to a relay: what a backend's ``connect`` returns."""

    async def receive(self) -> bytes:
        """The next bytes from the relay; ``b""`` once the stream has ended."""

    async def send(self, data: bytes) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class Message:
    """One verified Jupyter message."""

    channel: Channel
    msg_type: str
    parent_id: str | None
    content: Mapping[str, Any]


Listener = Callable[[Message], None]


class KernelChannel:
    """Send Jupyter requests to one kernel and route what comes back."""

    def __init__(self, pipe: Pipe, key: str, *, session: str | None = None) -> None:
        self._pipe = pipe
        self._key = key.encode()
        self._session = session or uuid.uuid4().hex
        self._listeners: dict[str, Listener] = {}
        self._replies: dict[str, asyncio.Future[Message]] = {}
        self._hello: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    # -- sending ---------------------------------------------------------------

    def _sign(self, *parts: bytes) -> bytes:
        return sign(self._key, *parts)

    async def request(self, channel: Channel, msg_type: str, content: Mapping[str, Any],
                      *, listener: Listener | None = None) -> str:
        """Send a request; ``listener`` gets every iopub message that names it as parent."""
        msg_id = uuid.uuid4().hex
        header = json.dumps({"msg_id": msg_id, "msg_type": msg_type, "username": "codeinterp",
                             "session": self._session, "date": datetime.now(UTC).isoformat(),
                             "version": "5.3"}).encode()
        parts = [header, b"{}", b"{}", json.dumps(content).encode()]
        frames = [DELIM, self._sign(*parts), *parts]
        if listener is not None:
            self._listeners[msg_id] = listener
        self._replies[msg_id] = asyncio.get_running_loop().create_future()
        try:
            await self._pipe.send(encode_record(CHANNELS.index(channel), frames))
        except (OSError, ConnectionError) as exc:
            self.forget(msg_id)
            raise KernelStartError(f"the channel to the kernel is closed ({exc})") from exc
        return msg_id

    async def reply(self, msg_id: str, timeout: float) -> Message | None:
        """The shell or control reply to ``msg_id``, or None if none came in time or the channel ended."""
        future = self._replies.get(msg_id)
        if future is None:
            return None
        closed = asyncio.ensure_future(self.closed.wait())
        try:
            await asyncio.wait((future, closed), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
        return future.result() if future.done() and not future.cancelled() else None

    def forget(self, msg_id: str) -> None:
        """Stop routing messages for ``msg_id``: its execution is over."""
        self._listeners.pop(msg_id, None)
        future = self._replies.pop(msg_id, None)
        if future is not None and not future.done():
            future.cancel()

    async def ready(self, timeout: float) -> None:
        """Wait for the relay's hello: it is connected to the kernel's sockets."""
        try:
            await asyncio.wait_for(asyncio.shield(self._hello), timeout)
        except TimeoutError:
            raise KernelStartError(f"the kernel relay did not connect within {timeout:.0f} s") from None

    # -- receiving -------------------------------------------------------------

    async def _read(self) -> None:
        buffer = bytearray()
        try:
            while True:
                data = await self._pipe.receive()
                if not data:
                    return
                buffer += data
                pos = 0
                while len(buffer) - pos >= 4:
                    (size,) = _LEN.unpack_from(buffer, pos)
                    if size > _MAX_RECORD or size == 0:
                        log.error("kernel channel: corrupt record of %d bytes; closing", size)
                        return
                    if len(buffer) - pos - 4 < size:
                        break
                    self._dispatch(bytes(buffer[pos + 4:pos + 4 + size]))
                    pos += 4 + size
                del buffer[:pos]
        except (OSError, ConnectionError) as exc:
            log.info("kernel channel ended: %s", exc)
        finally:
            self.closed.set()
            if not self._hello.done():
                self._hello.set_exception(KernelStartError("the kernel relay ended before it connected"))
                self._hello.exception()  # retrieved: a start that never waits must not warn

    def _dispatch(self, body: bytes) -> None:
        channel_byte, frames = decode_frames(body)
        if channel_byte == HELLO:
            if not self._hello.done():
                self._hello.set_result(None)
            return
        message = self._verify(CHANNELS[channel_byte], frames)
        if message is None or message.parent_id is None:
            return
        if message.channel == "iopub":
            listener = self._listeners.get(message.parent_id)
            if listener is not None:
                try:
                    listener(message)
                except Exception:  # a caller's output sink must not end the channel for all
                    log.exception("kernel channel: the listener for %s failed; it gets no more messages",
                                  message.parent_id)
                    self._listeners.pop(message.parent_id, None)
            return
        future = self._replies.get(message.parent_id)
        if future is not None and not future.done():
            future.set_result(message)

    def _verify(self, channel: Channel, frames: list[bytes]) -> Message | None:
        try:
            start = frames.index(DELIM) + 1
        except ValueError:
            log.warning("kernel channel: a message without a delimiter was dropped")
            return None
        signature, header, parent, metadata, content = frames[start:start + 5]
        if not hmac.compare_digest(signature, self._sign(header, parent, metadata, content)):
            log.warning("kernel channel: a message with a bad signature was dropped")
            return None
        msg_type = json.loads(header).get("msg_type", "")
        parent_id = json.loads(parent).get("msg_id") if parent != b"{}" else None
        return Message(channel=channel, msg_type=msg_type, parent_id=parent_id, content=json.loads(content))

    async def aclose(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader
        for msg_id in list(self._replies):
            self.forget(msg_id)
        with contextlib.suppress(Exception):
            await self._pipe.aclose()
