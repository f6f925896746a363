"""The seam between sessions and whatever hosts their kernels.

A backend starts and stops isolated kernel hosts and moves files in and out of
them, in the manner of jupyter_client's kernel provisioners. Sessions never
launch anything themselves.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from ._channel import Pipe
from ._datadir import DataDir, Snapshot
from ._errors import ConfigError
from ._results import FileInfo, KernelExit

__all__ = ["Backend", "Hibernation", "KernelHost", "Limits", "MountedFiles", "SessionSpec", "parse_size"]

_INLINE_WALK = 64  # entries in /mnt/data up to which an unchanged tree is checked on the event loop
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def parse_size(value: str | int) -> int:
    """Bytes from ``512m``, ``1g``, ``1GiB`` or a plain integer."""
    if isinstance(value, int):
        return value
    match = _SIZE.match(value)
    if not match:
        raise ConfigError(f"cannot read size {value!r}; write it like 512m or 1g")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * 1024 ** " kmgt".index(unit or " "))


@dataclass(frozen=True)
class Limits:
    """Per-session resource limits and output caps; every field has a safe default."""

    memory: str = "1g"  # RAM; swap is set equal, so none is used
    cpus: float = 1.0  # CPU quota, in cores
    pids: int = 256  # processes and threads together
    tmp_size: str = "256m"  # tmpfs for /tmp
    home_size: str = "256m"  # tmpfs for HOME
    data_size: str = "1g"  # /mnt/data quota (a loop-mounted image on Docker; see DockerConfig.data_quota)
    timeout: float = 60.0  # seconds per execution, by default
    interrupt_grace: float = 3.0  # seconds to wait for idle after an interrupt before restarting
    start_timeout: float = 30.0  # seconds for a kernel to answer after start
    max_stream_bytes: int = 1 << 20  # stdout+stderr kept per execution
    max_bundle_bytes: int = 10 << 20  # one MIME bundle
    max_displays: int = 500  # rich outputs kept per execution
    max_display_bytes: int = 64 << 20  # all rich outputs of one execution together
    max_reported_files: int = 200  # changed files listed per execution
    max_file_bytes: int = 512 << 20  # files larger than this are listed but not hashed

    @property
    def memory_bytes(self) -> int:
        return parse_size(self.memory)


@dataclass(frozen=True)
class SessionSpec:
    """What to start: one kernel host for one session."""

    session_id: str
    limits: Limits = field(default_factory=Limits)
    labels: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)  # added to the allowlisted environment


@dataclass(frozen=True)
class KernelHost:
    """A started kernel host, as the backend hands it to a session."""

    session_id: str
    name: str  # the container id, or the pid for a local kernel
    key: str  # the HMAC key that signs this kernel's Jupyter messages
    data: DataDir | None  # /mnt/data on this machine; None when it lives on another Docker engine
    code_paths: Mapping[str, str] = field(default_factory=dict)  # path rewrites for local kernels
    engine: str = ""  # the Docker engine holding it (DockerHost.name); empty for other backends

    @property
    def mounted(self) -> DataDir:
        """/mnt/data as a directory on this machine; an error for a host on another engine."""
        if self.data is None:
            raise ConfigError(f"/mnt/data of {self.name[:12]} is on engine {self.engine}, not on this machine")
        return self.data


@runtime_checkable
class Backend(Protocol):
    """Start, stop, interrupt and restart kernel hosts, and move their files."""

    async def start(self, spec: SessionSpec) -> KernelHost: ...

    async def stop(self, host: KernelHost) -> None: ...

    async def connect(self, host: KernelHost) -> Pipe:
        """A byte stream to a new relay beside the host's kernel (``sandbox/_inside/relay.py``)."""

    async def interrupt(self, host: KernelHost) -> None: ...

    async def restart(self, host: KernelHost) -> None:
        """A new kernel process in the same host: /mnt/data kept, Python state lost."""

    async def poll(self, host: KernelHost) -> KernelExit | None:
        """None while the kernel process runs; why it ended otherwise."""

    async def write_file(self, host: KernelHost, name: str, data: bytes | BinaryIO,
                         *, max_bytes: int | None = None, parents: bool = False) -> FileInfo: ...

    async def read_file(self, host: KernelHost, path: str, *, max_bytes: int | None = None) -> bytes: ...

    async def export_file(self, host: KernelHost, path: str, dest: Path,
                          *, max_bytes: int | None = None) -> FileInfo:
        """Copy a file out to ``dest`` on this host, streaming."""

    async def list_files(self, host: KernelHost) -> list[FileInfo]: ...

    async def delete_file(self, host: KernelHost, path: str) -> None: ...

    async def snapshot(self, host: KernelHost) -> Snapshot: ...

    async def changed_files(self, host: KernelHost, before: Snapshot, *, limit: int,
                            max_digest_bytes: int) -> tuple[list[FileInfo], bool]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Hibernation(Protocol):
    """A backend that can checkpoint a host's whole memory to disk, stop it, and restore it later.

    While hibernated a host holds no RAM and runs no process; its /mnt/data stays on disk. Close the
    kernel channel before ``hibernate``: a relay running at checkpoint time cannot be restored.
    """

    @property
    def can_hibernate(self) -> bool: ...

    async def hibernate(self, host: KernelHost) -> int:
        """Checkpoint and stop the host; the checkpoint's size in bytes (0 when it cannot be measured).

        HibernationUnsupported when the runtime cannot; HibernationError when the checkpoint
        failed (the kernel may be gone: its memory is then lost, its files are not).
        """

    async def wake(self, host: KernelHost) -> None:
        """Restore a hibernated host, memory intact; HibernationError when it cannot be."""

    async def adopt(self, name: str) -> KernelHost:
        """The KernelHost of an existing (hibernated) host, e.g. after this process restarted."""

    async def checkpoint_bytes(self, host: KernelHost) -> int:
        """Disk used by the host's checkpoint; 0 when there is none or it cannot be measured."""


class MountedFiles:
    """File operations for backends whose /mnt/data is a directory on this host."""

    async def write_file(self, host: KernelHost, name: str, data: bytes | BinaryIO,
                         *, max_bytes: int | None = None, parents: bool = False) -> FileInfo:
        return await asyncio.to_thread(host.mounted.write, name, data, max_bytes=max_bytes, parents=parents)

    async def read_file(self, host: KernelHost, path: str, *, max_bytes: int | None = None) -> bytes:
        return await asyncio.to_thread(host.mounted.read, path, max_bytes=max_bytes)

    async def export_file(self, host: KernelHost, path: str, dest: Path,
                          *, max_bytes: int | None = None) -> FileInfo:
        return await asyncio.to_thread(host.mounted.export, path, dest, max_bytes=max_bytes)

    async def list_files(self, host: KernelHost) -> list[FileInfo]:
        return await asyncio.to_thread(host.mounted.list)

    async def delete_file(self, host: KernelHost, path: str) -> None:
        await asyncio.to_thread(host.mounted.delete, path)

    async def snapshot(self, host: KernelHost) -> Snapshot:
        baseline = host.mounted.baseline()  # what the last execution's end saw: no second walk
        return baseline if baseline is not None else await asyncio.to_thread(host.mounted.snapshot)

    async def changed_files(self, host: KernelHost, before: Snapshot, *, limit: int,
                            max_digest_bytes: int) -> tuple[list[FileInfo], bool]:
        # A small tree that did not change (most executions) is checked here, without a thread hop;
        # anything larger, or any change (which means hashing files), is walked on a thread.
        if len(before) <= _INLINE_WALK and host.mounted.unchanged_since(before, budget=_INLINE_WALK):
            return [], False
        return await asyncio.to_thread(host.mounted.changed, before, limit=limit,
                                       max_digest_bytes=max_digest_bytes)

