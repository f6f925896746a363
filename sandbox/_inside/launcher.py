"""Start ipykernel inside a kernel host, with its sockets private to the host.

Run as ``python -I -c <this source> RUN_DIR``. The HMAC key comes in the
environment variable CODEINTERP_KERNEL_KEY and is removed from the kernel's
environment. The connection file and the ipc sockets live in RUN_DIR, which is
private to the host (a tmpfs in a container): the gateway never shares a
directory with the kernel; it reaches the sockets through the relay.
"""

import json
import os
import shutil
import sys

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
    sys.argv = ["ipykernel_launcher", "-f", path, "--HistoryManager.enabled=False", "--IPKernelApp.quiet=True"]
    from ipykernel import kernelapp

    kernelapp.launch_new_instance()


main()
