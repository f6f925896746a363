"""Start ipykernel inside a kernel host, with its sockets private to the host.

Run as ``python -I -c <this source> RUN_DIR``. The HMAC key comes in the
environment variable CODEINTERP_KERNEL_KEY and is removed from the kernel's
environment. The connection file and the ipc sockets live in RUN_DIR, which is
private to the host (a tmpfs in a container): the gateway never shares a
directory with the kernel; it reaches the sockets through the relay.
"""

import contextlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from typing import Any

import zmq


def _unbounded_queues() -> None:
    # ZeroMQ's default high-water mark (1,000 messages) makes a PUB socket drop output
    # silently when its reader falls behind. Every queue here is unbounded instead: the
    # kernel host's memory limit is the bound, and nothing is ever dropped.
    make = zmq.Context.socket

    def socket(self, socket_type, *args, **kwargs):  # type: ignore[no-untyped-def]
        sock = make(self, socket_type, *args, **kwargs)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        return sock

    zmq.Context.socket = socket  # type: ignore[method-assign]


def _ipc_subprocess_pipe(run_dir: str) -> None:
    # ipykernel collects the output of forked children through a PULL socket bound to a random
    # TCP port on 127.0.0.1. gVisor cannot checkpoint a listening TCP endpoint that is polled
    # ("endpoint still has waiters upon save"), so a sandbox could never hibernate. A Unix socket
    # in the private run dir does the same job and checkpoints.
    from ipykernel import iostream
    from zmq.eventloop.zmqstream import ZMQStream

    address = "ipc://" + os.path.join(run_dir, "subprocess-output")

    def setup_pipe_in(self):  # type: ignore[no-untyped-def]
        self._pipe_uuid = os.urandom(16)
        pipe_in = self.socket.context.socket(zmq.PULL)
        pipe_in.linger = 0
        pipe_in.bind(address)
        self._pipe_in = ZMQStream(pipe_in, self.io_loop)
        self._pipe_in.on_recv(self._handle_pipe_msg)

    def setup_pipe_out(self):  # type: ignore[no-untyped-def]
        ctx = zmq.Context()  # a new context: this runs in a forked child
        pipe_out = ctx.socket(zmq.PUSH)
        pipe_out.linger = 3000
        pipe_out.connect(address)
        return ctx, pipe_out

    iostream.IOPubThread._setup_pipe_in = setup_pipe_in  # type: ignore[method-assign]
    iostream.IOPubThread._setup_pipe_out = setup_pipe_out  # type: ignore[method-assign]


def _coalesced_flushes() -> None:
    # ipykernel answers every flush (each `print(..., flush=True)`) with a round trip to its IO
    # thread and one iopub message. A loop of 200,000 of them kept the kernel on a core for a
    # minute, and the relay, dockerd and the gateway as busy again, message by message, so the
    # other sandboxes on the host stalled. Here a flush that comes within `window` of the last
    # one that waited does not wait: it queues one send on the IO thread, which takes everything
    # the stream holds when it runs, as one message.
    #
    # Order on iopub stays the order of the calls, by two rules. Anything else bound for the IO
    # thread (another stream's flush, a display, the idle status) first cuts every such queued
    # flush: the calling thread takes the stream's text at once and queues it ahead. And the IO
    # thread sends stream messages itself, at once, instead of queueing them behind later work.
    import threading
    import time

    import ipykernel
    from ipykernel import iostream

    if getattr(ipykernel, "version_info", (0,))[0] != 7 or not hasattr(iostream.OutStream, "_rotate_buffers"):
        return  # written against ipykernel 7's internals; another keeps its own flushes
    window = 0.01  # seconds after a flush that waited in which the next ones do not wait
    lock = threading.Lock()
    queued: dict[Any, object] = {}  # stream -> token of its coalesced flush on the IO thread
    waiting_flush: Callable[[Any], None] = iostream.OutStream.flush
    raw_schedule: Callable[[Any, Any], None] = iostream.IOPubThread.schedule

    class _Now:
        # What session.send writes to: the IO thread's send itself, not a queued one.
        def __init__(self, pub: Any) -> None:
            self.pub = pub

        def send_multipart(self, parts: Any, *args: Any, **kwargs: Any) -> None:
            self.pub._really_send(parts, *args, **kwargs)

    def send(stream: Any, buffers: Any) -> None:
        for frozen_parent, buffer in buffers.items():
            data = buffer.getvalue()
            buffer.close()
            if not data:
                continue
            stream.session.pid = os.getpid()
            msg = stream.session.msg("stream", {"name": stream.name, "text": data}, parent=dict(frozen_parent))
            for hook in stream._hooks:
                msg = hook(msg)
                if msg is None:
                    return
            stream.session.send(_Now(stream.pub_thread), msg, ident=stream.topic)

    def cut(keep: Any = None) -> None:  # holding lock
        for stream in [s for s in queued if s is not keep]:
            del queued[stream]
            buffers = stream._rotate_buffers()
            raw_schedule(stream.pub_thread, lambda s=stream, b=buffers: send(s, b))

    def schedule(self: Any, f: Any) -> None:
        if queued and self.thread.is_alive() and self.thread.ident != threading.get_ident():
            with lock:
                cut()
                raw_schedule(self, f)
        else:
            raw_schedule(self, f)

    def _flush(self: Any) -> None:
        self._flush_pending = False
        self._subprocess_flush_pending = False
        if self.echo is not None:
            with contextlib.suppress(OSError):
                self.echo.flush()
        send(self, self._rotate_buffers())

    def coalesced(self: Any, token: object) -> None:  # on the IO thread
        with lock:
            if queued.get(self) is not token:
                return  # cut, or superseded
            del queued[self]
            buffers = self._rotate_buffers()
        send(self, buffers)

    def enqueue(self: Any) -> None:  # holding lock
        token = queued[self] = object()
        raw_schedule(self.pub_thread, lambda: coalesced(self, token))

    def _schedule_flush(self: Any) -> None:
        # What is written without a flush goes out after flush_interval. When that timer fires, the
        # IO thread may hold queued work that came after the text was written, so it queues the
        # text's send too (a cut keeps it ahead of anything queued later) instead of sending it.
        if self._flush_pending:
            return
        self._flush_pending = True

        def timed() -> None:
            self._flush_pending = False
            with lock:
                if self not in queued:
                    enqueue(self)

        self.pub_thread.schedule(lambda: self._io_loop.call_later(self.flush_interval, timed))

    def flush(self: Any) -> None:
        pub = self.pub_thread
        if (pub is None or pub.thread is None or not pub.thread.is_alive() or self.echo is not None
                or pub.thread.ident == threading.get_ident() or not self._is_master_process()):
            waiting_flush(self)
            return
        now = time.monotonic()
        if now - getattr(self, "_codeinterp_waited", 0.0) > window:
            waiting_flush(self)
            self._codeinterp_waited = time.monotonic()
            return
        if self in queued:
            return  # the queued send will take what was just written
        with lock:
            cut(keep=self)
            enqueue(self)

    iostream.IOPubThread.schedule = schedule  # type: ignore[method-assign]
    iostream.OutStream._flush = _flush  # type: ignore[method-assign]
    iostream.OutStream._schedule_flush = _schedule_flush  # type: ignore[method-assign]
    iostream.OutStream.flush = flush  # type: ignore[method-assign]


def main() -> None:
    run_dir = sys.argv[1]
    key = os.environ.pop("CODEINTERP_KERNEL_KEY")
    os.makedirs(run_dir, mode=0o700, exist_ok=True)
    path = os.path.join(run_dir, "connection.json")
    info = {"transport": "ipc", "ip": os.path.join(run_dir, "k"), "shell_port": 1, "iopub_port": 2,
            "stdin_port": 3, "control_port": 4, "hb_port": 5, "key": key,
            "signature_scheme": "hmac-sha256", "kernel_name": ""}
    stale = [f"{info['ip']}-{port}" for port in range(1, 6)] + [os.path.join(run_dir, "subprocess-output")]
    for name in stale:  # sockets of a kernel that was killed
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as conn:
        json.dump(info, conn)
    home = os.environ.get("HOME")
    if home and os.path.isdir(home):
        # HOME is a fresh tmpfs on every (re)start: seed matplotlib's font cache, built into the
        # image, so that a first plot does not spend seconds scanning fonts. The working directory
        # is HOME, not /mnt/data, so files the code drops there cannot shadow modules at startup.
        seed = "/opt/codeinterp/mpl"
        if os.path.isdir(seed):
            shutil.copytree(seed, os.path.join(home, ".config", "matplotlib"), dirs_exist_ok=True)
        os.chdir(home)
    _unbounded_queues()
    _ipc_subprocess_pipe(run_dir)
    _coalesced_flushes()
    sys.argv = ["ipykernel_launcher", "-f", path, "--HistoryManager.enabled=False", "--IPKernelApp.quiet=True"]
    from ipykernel import kernelapp

    kernelapp.launch_new_instance()


main()
