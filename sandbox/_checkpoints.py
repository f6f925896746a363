"""Hibernation (gVisor only): Docker's checkpoint calls, which docker-py does not wrap, and the runsc
state they can leave behind. ``Checkpointing`` is DockerBackend's half that does it."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import docker.errors

from ._backend import KernelHost
from ._engines import Engine
from ._errors import HibernationError, HibernationUnsupported, SandboxError

__all__ = ["Checkpointing"]

T = TypeVar("T")
_HIBERNATING_RUNTIMES = ("runsc",)  # CRIU, runc's checkpointer, fails on the kernels we run on

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


class Checkpointing:
    """Checkpoint a sandbox's whole memory to its engine's disk and restore it. The backend provides
    ``config`` (its runtime), ``_engine`` and ``_call``."""

    config: Any

    def _engine(self, host: KernelHost | str) -> Engine:
        raise NotImplementedError

    async def _call(self, engine: Engine, fn: Callable[[], T], *, probe: bool = False) -> T:
        raise NotImplementedError

    @property
    def can_hibernate(self) -> bool:
        return self.config.runtime in _HIBERNATING_RUNTIMES

    async def hibernate(self, host: KernelHost) -> int:
        if not self.can_hibernate:
            raise HibernationUnsupported(
                f"runtime {self.config.runtime or 'runc'} cannot checkpoint memory; use runtime='runsc' (gVisor)")
        engine = self._engine(host)
        if not engine.host.local:
            # Its /mnt/data is a tmpfs volume, gone when a checkpoint stops the container: expiring
            # instead keeps the files (the caller stores them), where a wake would find them lost.
            raise HibernationUnsupported(f"sandboxes on the remote engine {engine.name} do not hibernate")

        def checkpoint() -> None:
            api: Any = engine.client().api  # checkpoints have no wrapper in docker-py: its raw calls
            wait_for_execs(api, host.name)
            delete_checkpoint(api, host.name)  # one left by a wake that could not delete it
            response = api._post_json(api._url("/containers/{0}/checkpoints", host.name),
                                      data={"CheckpointID": CHECKPOINT, "Exit": True})
            api._raise_for_status(response)
        try:
            await self._call(engine, checkpoint)
        except HibernationError:
            raise
        except SandboxError as exc:
            raise HibernationError(f"checkpoint of {host.name[:12]} failed: {exc}") from exc
        return await self.checkpoint_bytes(host)

    async def wake(self, host: KernelHost) -> None:
        if not self.can_hibernate:
            raise HibernationUnsupported(f"runtime {self.config.runtime or 'runc'} cannot restore memory")
        engine = self._engine(host)

        def restore() -> None:
            api: Any = engine.client().api
            start = api._url("/containers/{0}/start", host.name)
            response = api._post(start, params={"checkpoint": CHECKPOINT})
            if response.status_code >= 400 and "id already in use" in response.text and engine.host.local:
                # runsc 20221219 leaves the state of a restored sandbox behind when it is checkpointed
                # again (it lists as "paused", its process gone): every later restore is refused.
                forget_runsc_state(host.name)
                response = api._post(start, params={"checkpoint": CHECKPOINT})
            api._raise_for_status(response)
            # Restored: the checkpoint is spent. Deleting it frees its disk now, not when the container goes.
            delete_checkpoint(api, host.name)
        try:
            await self._call(engine, restore)
        except SandboxError as exc:
            raise HibernationError(f"restore of {host.name[:12]} failed: {exc}") from exc

    async def checkpoint_bytes(self, host: KernelHost) -> int:
        engine = self._engine(host)
        if not engine.host.local:
            return 0  # on another machine: not measurable from here

        def measure() -> int:
            root = engine.client().info().get("DockerRootDir", "/var/lib/docker")
            total = 0
            # Only readable when Docker runs on this host and we may read its root: else 0, unmeasured.
            with contextlib.suppress(OSError):
                for path in (Path(root) / "containers" / host.name / "checkpoints").rglob("*"):
                    with contextlib.suppress(OSError):
                        total += path.lstat().st_size
            return total
        return await self._call(engine, measure)
