"""Carry a kernel's ZeroMQ messages over this process's stdin and stdout.

Run inside the kernel host as ``python -I -c <this source> CONNECTION_FILE``.
The other end is ``sandbox._channel``: it reaches this process through whatever
byte stream the backend offers (``docker exec`` for containers, or a socket
that ``dial.py`` connects under runc; a pipe for a local kernel), so the
kernel's sockets never leave the host they live in. That is what lets a
kernel run under gVisor, on another Docker host, or be checkpointed with its
memory.

Each message, either way, is one record: a 4-byte big-endian length, a channel
byte, then each ZeroMQ frame as a 4-byte big-endian length and its bytes. The
frames are the kernel's own, HMAC signature included: the relay neither signs
nor reads them. Queues are unbounded, so a slow reader slows the kernel's
output down (the pipe fills) but never loses any of it.
"""

import json
import os
import struct
import sys
import threading
import time
from typing import Any

import zmq

CHANNELS = ("shell", "iopub", "stdin", "control")  # record channel bytes 0..3
HELLO = 9  # first record: the relay is connected
_LEN = struct.Struct(">I")


def _record(channel: int, frames: list[bytes]) -> bytes:
    parts: list[bytes] = [b"", bytes((channel,))]
    for frame in frames:
        parts.append(_LEN.pack(len(frame)))
        parts.append(frame)
    body_len = sum(len(p) for p in parts)
    parts[0] = _LEN.pack(body_len)
    return b"".join(parts)


def _frames(body: bytes) -> list[bytes]:
    frames: list[bytes] = []
    pos = 1
    while pos < len(body):
        (size,) = _LEN.unpack_from(body, pos)
        frames.append(body[pos + 4:pos + 4 + size])
        pos += 4 + size
    return frames


def _write(data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(1, view):]


def _connection(path: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        try:
            with open(path) as conn:
                info: dict[str, Any] = json.load(conn)
                return info
        except (FileNotFoundError, ValueError):
            if time.monotonic() > deadline:
                sys.exit(f"relay: no kernel connection file at {path}")
            time.sleep(0.01)


def _read_stdin(context: zmq.Context, address: str) -> None:  # type: ignore[type-arg]
    # A blocking read in a thread of its own: under gVisor, a poll that mixes this host pipe with
    # ZeroMQ's own descriptors wakes late, which more than doubled every round trip.
    inbox = context.socket(zmq.PAIR)
    inbox.setsockopt(zmq.SNDHWM, 0)
    inbox.connect(address)
    pending = bytearray()
    while True:
        data = os.read(0, 1 << 20)
        if not data:
            inbox.send(b"")  # the other end hung up
            return
        pending += data
        while len(pending) >= 4:
            (size,) = _LEN.unpack_from(pending)
            if len(pending) < 4 + size:
                break
            inbox.send(bytes(pending[4:4 + size]))
            del pending[:4 + size]


def main() -> None:
    info = _connection(sys.argv[1])
    context = zmq.Context()
    sockets = {}
    for channel, name in enumerate(CHANNELS):
        sock = context.socket(zmq.SUB if name == "iopub" else zmq.DEALER)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.LINGER, 0)
        if name == "iopub":
            sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(f"{info['transport']}://{info['ip']}-{info[name + '_port']}")
        sockets[channel] = sock
    inbox = context.socket(zmq.PAIR)
    inbox.setsockopt(zmq.RCVHWM, 0)
    inbox.bind("inproc://stdin")
    threading.Thread(target=_read_stdin, args=(context, "inproc://stdin"), daemon=True).start()
    by_socket = {sock: channel for channel, sock in sockets.items()}
    poller = zmq.Poller()
    for sock in sockets.values():
        poller.register(sock, zmq.POLLIN)
    poller.register(inbox, zmq.POLLIN)
    _write(_record(HELLO, [json.dumps({"relay": 1}).encode()]))
    while True:
        out = []
        for sock, _ in poller.poll():
            if sock is inbox:
                for _ in range(1000):
                    try:
                        body = inbox.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    if not body:
                        return
                    sockets[body[0]].send_multipart(_frames(body))
                continue
            channel = by_socket[sock]
            for _ in range(1000):  # bounded, so requests are never starved
                try:
                    out.append(_record(channel, sock.recv_multipart(zmq.NOBLOCK)))
                except zmq.Again:
                    break
        if out:
            _write(b"".join(out))

main()
