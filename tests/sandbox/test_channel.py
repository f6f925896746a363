"""KernelChannel on an in-memory pipe: signatures are checked, messages go to the request they answer."""

from __future__ import annotations

import asyncio
import json

import pytest

from sandbox._channel import CHANNELS, DELIM, HELLO, KernelChannel, Message, decode_frames, encode_record, sign
from sandbox._errors import KernelStartError

KEY = "k" * 32


class MemoryPipe:
    def __init__(self) -> None:
        self.incoming: asyncio.Queue[bytes] = asyncio.Queue()
        self.sent: list[bytes] = []

    async def receive(self) -> bytes:
        return await self.incoming.get()

    async def send(self, data: bytes) -> None:
        self.sent.append(data)

    async def aclose(self) -> None:
        self.incoming.put_nowait(b"")


def kernel_message(channel: str, msg_type: str, parent_id: str, content: dict[str, object],
                   key: str = KEY) -> bytes:
    parts = [json.dumps({"msg_id": "x", "msg_type": msg_type}).encode(), json.dumps({"msg_id": parent_id}).encode(),
             b"{}", json.dumps(content).encode()]
    return encode_record(CHANNELS.index(channel), [DELIM, sign(key.encode(), *parts), *parts])


def sent_request(pipe: MemoryPipe) -> tuple[str, dict[str, object]]:
    channel, frames = decode_frames(pipe.sent[-1][4:])
    start = frames.index(DELIM) + 1
    assert frames[start] == sign(KEY.encode(), *frames[start + 1:start + 5]), "requests are signed with the key"
    return CHANNELS[channel], json.loads(frames[start + 1])


async def test_messages_reach_the_listener_of_the_request_they_answer() -> None:
    pipe = MemoryPipe()
    channel = KernelChannel(pipe, KEY)
    pipe.incoming.put_nowait(encode_record(HELLO, [b"{}"]))
    await channel.ready(5)
    seen: list[Message] = []
    msg_id = await channel.request("shell", "execute_request", {"code": "1"}, listener=seen.append)
    assert sent_request(pipe)[0] == "shell"
    # One byte at a time: records may arrive split anywhere.
    stream = (kernel_message("iopub", "stream", "someone-else", {"text": "not ours"})
              + kernel_message("iopub", "stream", msg_id, {"text": "ours"})
              + kernel_message("shell", "execute_reply", msg_id, {"status": "ok"}))
    for i in range(len(stream)):
        pipe.incoming.put_nowait(stream[i:i + 1])
    reply = await channel.reply(msg_id, 5)
    assert reply is not None and reply.msg_type == "execute_reply"
    assert [(m.msg_type, m.content["text"]) for m in seen] == [("stream", "ours")]
    await channel.aclose()


async def test_a_message_signed_with_another_key_is_dropped() -> None:
    pipe = MemoryPipe()
    channel = KernelChannel(pipe, KEY)
    seen: list[Message] = []
    msg_id = await channel.request("shell", "execute_request", {}, listener=seen.append)
    pipe.incoming.put_nowait(kernel_message("iopub", "stream", msg_id, {"text": "forged"}, key="other" * 8))
    pipe.incoming.put_nowait(kernel_message("iopub", "stream", msg_id, {"text": "real"}))
    pipe.incoming.put_nowait(kernel_message("shell", "execute_reply", msg_id, {}))
    assert await channel.reply(msg_id, 5) is not None
    assert [m.content["text"] for m in seen] == ["real"]
    await channel.aclose()


async def test_a_corrupt_stream_closes_the_channel_and_a_start_waiting_for_it_fails() -> None:
    pipe = MemoryPipe()
    channel = KernelChannel(pipe, KEY)
    pipe.incoming.put_nowait(b"\xff\xff\xff\xff" + b"junk")
    await asyncio.wait_for(channel.closed.wait(), 5)
    with pytest.raises(KernelStartError):
        await channel.ready(1)
    msg_id = await channel.request("shell", "kernel_info_request", {})
    assert await channel.reply(msg_id, 0.1) is None  # no hang on a dead channel
    await channel.aclose()
