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


def main() -> None:
    run_dir = sys.argv[1]
    key = os.environ.pop("CODEINTERP_KERNEL_KEY")
    os.makedirs(run_dir, mode=0o700, exist_ok=True)
    path = os.path.join(run_dir, "connection.json")
    info = {"transport": "ipc", "ip": os.path.join(run_dir, "k"), "shell_port": 1, "iopub_port": 2,
            "stdin_port": 3, "control_port": 4, "hb_port": 5, "key": key,
            "signature_scheme": "hmac-sha256", "kernel_name": ""}
    for port in range(1, 6):  # sockets of a kernel that was killed
        try:
            os.unlink(f"{info['ip']}-{port}")
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
    sys.argv = ["ipykernel_launcher", "-f", path, "--HistoryManager.enabled=False", "--IPKernelApp.quiet=True"]
    from ipykernel import kernelapp

    kernelapp.launch_new_instance()


main()
