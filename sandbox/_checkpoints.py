"""Docker's checkpoint calls, which docker-py does not wrap, and the runsc state they can leave behind."""

from __future__ import annotations

import contextlib
import subprocess
import time
from typing import Any

import docker.errors

from ._errors import HibernationError

__all__ = ["CHECKPOINT", "delete_checkpoint", "forget_runsc_state", "wait_for_execs"]

CHECKPOINT = "hibernated"  # one per container, in Docker's default place (a custom dir is refused on start)
# Where Docker 20.10's shim keeps runsc's container state (its --root), on this host.
_RUNSC_ROOT = "/run/docker/runtime-runc/moby"


def wait_for_execs(api: Any, name: str, timeout: float = 10.0) -> None:
    """Wait until no ``docker exec`` runs in the container: a relay caught by a checkpoint holds
    host file descriptors, and gVisor then fails the restore ("failed to set host FD non-blocking")."""
    deadline = time.monotonic() + timeout
    while True:
        running = [e for e in api.inspect_container(name).get("ExecIDs") or []
                   if _exec_running(api, e)]
        if not running:
            return
        if time.monotonic() > deadline:
            raise HibernationError(f"{len(running)} exec session(s) still run in {name[:12]}; close the channel first")
        time.sleep(0.05)


def _exec_running(api: Any, exec_id: str) -> bool:
    try:
        return bool(api.exec_inspect(exec_id).get("Running"))
    except docker.errors.NotFound:
        return False


def forget_runsc_state(container_id: str) -> None:
    """Drop runsc's stale record of a container Docker sees as exited. ``delete --force`` removes the
    record, then panics on the "paused => stopped" transition: its exit status says nothing."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(["runsc", "--root", _RUNSC_ROOT, "delete", "--force", container_id],
                       capture_output=True, timeout=30, check=False)


def delete_checkpoint(api: Any, name: str) -> None:
    with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
        api._raise_for_status(api._delete(api._url("/containers/{0}/checkpoints/{1}", name, CHECKPOINT)))
