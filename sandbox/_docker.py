"""DockerBackend: one locked-down container per session. The only module that imports docker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions
from docker.models.containers import Container
from docker.types import Ulimit

from ._backend import KernelHost, MountedFiles, SessionSpec, parse_size
from ._channel import READ_CHUNK, Pipe
from ._datadir import DataDir
from ._errors import (
    BackendUnavailable,
    ConfigError,
    HibernationError,
    HibernationUnsupported,
    ImageNotFound,
    KernelStartError,
    SandboxError,
)
from ._inside import source
from ._results import FileInfo, KernelExit
from ._seccomp import profile_json
from ._volume import make_data_dir, release_workdir

__all__ = ["LABEL", "DockerBackend", "DockerConfig"]

LABEL = "codeinterp"  # every container we make carries it; sweep by it
_RUN = "/run/kernel"  # the kernel's connection file and ipc sockets: a tmpfs private to the container
_HOME = "/home/sandbox"
_PYTHON = "/opt/venv/bin/python"
_KEY_VAR = "CODEINTERP_KERNEL_KEY"
_CHECKPOINT = "hibernated"  # one per container, in Docker's default place (a custom dir is refused on start)
_HIBERNATING_RUNTIMES = ("runsc",)  # CRIU, runc's checkpointer, fails on the kernels we run on
# Where Docker 20.10's shim keeps runsc's container state (its --root), on this host.
_RUNSC_ROOT = "/run/docker/runtime-runc/moby"
log = logging.getLogger("codeinterp.sandbox")
T = TypeVar("T")


@dataclass(frozen=True)
class DockerConfig:
    """How DockerBackend runs containers. Defaults are the safe ones."""

    image: str | None = None  # None: the default image for this checkout
    work_root: Path = Path("/tmp/codeinterp")  # per-session /mnt/data dirs (and their quota images)
    uid: int = 1000  # the kernel user; never root
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    labels: Mapping[str, str] = field(default_factory=dict)  # added to every container
    env: Mapping[str, str] = field(default_factory=dict)  # added to every kernel's environment
    runtime: str | None = None  # e.g. "runsc" for gVisor
    seccomp: str = "codeinterp"  # "codeinterp" (ours: Docker's lacks ptrace), "docker" (its default)
    # /mnt/data as a loop-mounted image of Limits.data_size: "auto" (when this host allows it, else a
    # plain directory and a warning), "loop" (required: a session fails to start without it) or "off".
    data_quota: str = "auto"
    base_url: str | None = None  # the Docker endpoint; None reads DOCKER_HOST
    workers: int = 16  # threads for blocking Docker calls


def kernel_environment(spec: SessionSpec, extra: Mapping[str, str]) -> dict[str, str]:
    """The allowlisted environment: nothing of the host's or the gateway's own."""
    threads = str(max(1, int(spec.limits.cpus)))
    env = {
        "HOME": _HOME,
        "USER": "sandbox",
        "PATH": "/opt/venv/bin:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "MPLCONFIGDIR": f"{_HOME}/.config/matplotlib",
        "OPENBLAS_NUM_THREADS": threads,
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
    }
    env.update(extra)
    env.update(spec.env)
    return env


class DockerBackend(MountedFiles):
    """Kernels in containers with no network, as a non-root user, under limits."""

    def __init__(self, config: DockerConfig | None = None) -> None:
        self.config = config or DockerConfig()
        self._pool = ThreadPoolExecutor(self.config.workers, thread_name_prefix="docker")
        self._client: docker.DockerClient | None = None
        self._image: str | None = self.config.image

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))
        except docker.errors.ImageNotFound as exc:
            raise ImageNotFound(
                f"kernel image {self.image} is not built; run `codeinterp image build`"
            ) from exc
        except docker.errors.NotFound as exc:
            raise SandboxError(f"container vanished: {exc.explanation}") from exc
        except docker.errors.APIError as exc:
            raise SandboxError(f"Docker refused: {exc.explanation}") from exc
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise BackendUnavailable(
                f"Docker is not reachable ({exc}); start it with `scripts/docker-up.sh`"
            ) from exc

    @property
    def image(self) -> str:
        if self._image is None:
            from ._image import default_image

            self._image = default_image()
        return self._image

    def _docker(self) -> docker.DockerClient:
        if self._client is None:
            if self.config.base_url:
                self._client = docker.DockerClient(base_url=self.config.base_url, timeout=30)
            else:
                self._client = docker.from_env(timeout=30)
        return self._client

    def _security_opt(self) -> list[str]:
        options = ["no-new-privileges"]
        gvisor = "runsc" in (self.config.runtime or "")
        if self.config.seccomp == "docker" and gvisor:
            raise ConfigError("seccomp='docker' cannot run a kernel under gVisor (runsc turns the profile's "
                              "ENOSYS for clone3 into EPERM, so no thread starts); use seccomp='codeinterp'")
        if self.config.seccomp == "codeinterp":
            # gVisor applies it inside its own kernel (runsc --oci-seccomp), which needs a variant.
            options.append(f"seccomp={profile_json(gvisor=gvisor)}")
        elif self.config.seccomp != "docker":
            raise ConfigError(f"seccomp must be 'codeinterp' or 'docker', not {self.config.seccomp!r}")
        return options

    async def ping(self) -> bool:
        try:
            return bool(await self._call(lambda: self._docker().ping()))
        except SandboxError:
            return False

    async def image_present(self) -> bool:
        try:
            await self._call(lambda: self._docker().images.get(self.image))
        except ImageNotFound:
            return False
        return True

    def _labels(self, spec: SessionSpec) -> dict[str, str]:
        return {**self.config.labels, **spec.labels, LABEL: "1",
                f"{LABEL}.session": spec.session_id[:200], f"{LABEL}.owner": self.config.owner}

    async def start(self, spec: SessionSpec) -> KernelHost:
        key = secrets.token_hex(6)
        root = self.config.work_root / key
        data = DataDir(root / "data", uid=self.config.uid)
        hmac_key = secrets.token_hex(32)
        limits = spec.limits
        preparing = asyncio.ensure_future(
            asyncio.to_thread(self._prepare_dirs, root, data, parse_size(limits.data_size)))
        try:
            await asyncio.shield(preparing)
        except BaseException:
            # A cancel does not stop the thread: let it finish, or it mounts after we cleaned up.
            with contextlib.suppress(BaseException):
                await preparing
            await asyncio.to_thread(release_workdir, root)
            raise
        memory = limits.memory_bytes
        run_args: dict[str, Any] = dict(
            image=self.image,
            # The image gives tini, Python and ipykernel; how the kernel starts is ours, so that
            # both ends of the channel come from this checkout (see sandbox/_inside).
            entrypoint=["/usr/bin/tini", "-g", "--", _PYTHON, "-I", "-c", source("launcher"), _RUN],
            command=[],
            name=f"codeinterp-{key}",
            detach=True,
            labels=self._labels(spec),
            network_mode="none",
            user=f"{self.config.uid}:{self.config.uid}",
            read_only=True,
            tmpfs={
                "/tmp": f"size={parse_size(limits.tmp_size)},mode=1777,nosuid,nodev",
                _HOME: f"size={parse_size(limits.home_size)},uid={self.config.uid},"
                       f"gid={self.config.uid},mode=0700,nosuid,nodev",
                _RUN: f"size=1m,uid={self.config.uid},gid={self.config.uid},mode=0700,nosuid,nodev,noexec",
            },
            volumes={str(data.path): {"bind": "/mnt/data", "mode": "rw"}},
            environment={**kernel_environment(spec, self.config.env), _KEY_VAR: hmac_key},
            working_dir=_HOME,
            cap_drop=["ALL"],
            security_opt=self._security_opt(),
            pids_limit=limits.pids,
            mem_limit=memory,
            memswap_limit=memory,
            mem_swappiness=0,
            nano_cpus=int(limits.cpus * 1e9),
            ulimits=[Ulimit(name="nofile", soft=4096, hard=4096),
                     Ulimit(name="core", soft=0, hard=0)],
            log_config={"type": "json-file", "config": {"max-size": "1m", "max-file": "1"}},
            ipc_mode="private",
        )
        if self.config.runtime:
            run_args["runtime"] = self.config.runtime
        creating = asyncio.ensure_future(self._call(lambda: self._docker().containers.run(**run_args)))
        try:
            container: Container = await asyncio.shield(creating)
        except asyncio.CancelledError:
            # Docker goes on creating it in its thread: wait for that, then remove it, or it leaks.
            with contextlib.suppress(Exception):
                await self.remove_container((await creating).id or "")
            await asyncio.to_thread(release_workdir, root)
            raise
        except BaseException:
            await asyncio.to_thread(release_workdir, root)
            raise
        return KernelHost(session_id=spec.session_id, name=container.id or "", key=hmac_key, data=data)

    def _prepare_dirs(self, root: Path, data: DataDir, data_size: int) -> None:
        root.mkdir(parents=True, mode=0o700)
        make_data_dir(data, size=data_size, mode=self.config.data_quota)

    async def connect(self, host: KernelHost) -> Pipe:
        """A relay beside the kernel, run with ``docker exec``; its stdin and stdout are the channel."""
        def create() -> str:
            created = self._docker().api.exec_create(
                host.name, [_PYTHON, "-I", "-c", source("relay"), f"{_RUN}/connection.json"],
                stdin=True, stdout=True, stderr=True, user=f"{self.config.uid}:{self.config.uid}")
            return str(created["Id"])
        exec_id = await self._call(create)
        try:
            return await _ExecPipe.open(self._endpoint(), exec_id)
        except OSError as exc:
            raise BackendUnavailable(
                f"cannot attach to the kernel relay ({exc}); is Docker running? `scripts/docker-up.sh`") from exc

    def _endpoint(self) -> str:
        return self.config.base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"

    async def stop(self, host: KernelHost) -> None:
        # The container first: it holds the data mount, which can only go once it is gone.
        try:
            await self.remove_container(host.name)
        finally:
            await asyncio.to_thread(release_workdir, host.data.path.parent)

    async def remove_container(self, name: str) -> None:
        def remove() -> None:
            try:
                self._docker().api.remove_container(name, force=True, v=True)
            except docker.errors.NotFound:
                pass
        await self._call(remove)

    def _data_dir_of(self, container: Mapping[str, Any]) -> Path | None:
        """The host side of a listed container's /mnt/data, if it lies in our work root."""
        for mount in container.get("Mounts") or []:
            source = Path(mount.get("Source", ""))
            if mount.get("Destination") == "/mnt/data" and source.parent.parent == self.config.work_root:
                return source
        return None

    def orphan_files(self, container: Mapping[str, Any]) -> OrphanFiles | None:
        """The /mnt/data of a listed container that no session holds (after a crash), if it is ours."""
        source = self._data_dir_of(container)
        return OrphanFiles(DataDir(source, uid=self.config.uid)) if source is not None else None

    async def remove_workdir(self, container: Mapping[str, Any]) -> None:
        """Delete the data and socket dirs of a listed container (unmounting the quota), if they are ours."""
        source = self._data_dir_of(container)
        if source is not None:
            await asyncio.to_thread(release_workdir, source.parent)

    # -- hibernation (gVisor only) ---------------------------------------------------

    @property
    def can_hibernate(self) -> bool:
        return self.config.runtime in _HIBERNATING_RUNTIMES

    async def hibernate(self, host: KernelHost) -> int:
        if not self.can_hibernate:
            raise HibernationUnsupported(
                f"runtime {self.config.runtime or 'runc'} cannot checkpoint memory; use runtime='runsc' (gVisor)")

        def checkpoint() -> None:
            api: Any = self._docker().api  # checkpoints have no wrapper in docker-py: its raw calls
            _wait_for_execs(api, host.name)
            _delete_checkpoint(api, host.name)  # one left by a wake that could not delete it
            response = api._post_json(api._url("/containers/{0}/checkpoints", host.name),
                                      data={"CheckpointID": _CHECKPOINT, "Exit": True})
            api._raise_for_status(response)
        try:
            await self._call(checkpoint)
        except HibernationError:
            raise
        except SandboxError as exc:
            raise HibernationError(f"checkpoint of {host.name[:12]} failed: {exc}") from exc
        return await self.checkpoint_bytes(host)

    async def wake(self, host: KernelHost) -> None:
        if not self.can_hibernate:
            raise HibernationUnsupported(f"runtime {self.config.runtime or 'runc'} cannot restore memory")

        def restore() -> None:
            api: Any = self._docker().api
            start = api._url("/containers/{0}/start", host.name)
            response = api._post(start, params={"checkpoint": _CHECKPOINT})
            if response.status_code >= 400 and "id already in use" in response.text:
                # runsc 20221219 leaves the state of a restored sandbox behind when it is checkpointed
                # again (it lists as "paused", its process gone): every later restore is refused.
                _forget_runsc_state(host.name)
                response = api._post(start, params={"checkpoint": _CHECKPOINT})
            api._raise_for_status(response)
            # Restored: the checkpoint is spent. Deleting it frees its disk now, not when the container goes.
            _delete_checkpoint(api, host.name)
        try:
            await self._call(restore)
        except SandboxError as exc:
            raise HibernationError(f"restore of {host.name[:12]} failed: {exc}") from exc

    async def adopt(self, name: str) -> KernelHost:
        info = await self._call(lambda: self._docker().api.inspect_container(name))
        env = dict(item.partition("=")[::2] for item in info["Config"].get("Env") or [])
        source = self._data_dir_of(info)
        if _KEY_VAR not in env or source is None:
            raise SandboxError(f"container {name[:12]} is not one of this backend's sandboxes")
        session = (info["Config"].get("Labels") or {}).get(f"{LABEL}.session", "")
        return KernelHost(session_id=session, name=info["Id"], key=env[_KEY_VAR],
                          data=DataDir(source, uid=self.config.uid))

    async def checkpoint_bytes(self, host: KernelHost) -> int:
        def measure() -> int:
            root = self._docker().info().get("DockerRootDir", "/var/lib/docker")
            total = 0
            # Only readable when Docker runs on this host and we may read its root: else 0, unmeasured.
            with contextlib.suppress(OSError):
                for path in (Path(root) / "containers" / host.name / "checkpoints").rglob("*"):
                    with contextlib.suppress(OSError):
                        total += path.lstat().st_size
            return total
        return await self._call(measure)

    async def interrupt(self, host: KernelHost) -> None:
        # tini (PID 1, run with -g) forwards SIGINT to the kernel's process group.
        def kill() -> None:
            try:
                self._docker().api.kill(host.name, signal="SIGINT")
            except docker.errors.APIError:
                pass  # not running: nothing to interrupt
        await self._call(kill)

    async def restart(self, host: KernelHost) -> None:
        def cycle() -> None:
            api = self._docker().api
            try:
                api.kill(host.name, signal="SIGKILL")
            except docker.errors.APIError:
                pass
            api.wait(host.name, timeout=30)
            api.start(host.name)
        await self._call(cycle)

    async def poll(self, host: KernelHost) -> KernelExit | None:
        state = (await self._call(lambda: self._docker().api.inspect_container(host.name)))["State"]
        if state.get("Running"):
            return None
        return KernelExit(exit_code=state.get("ExitCode"), oom_killed=bool(state.get("OOMKilled")))

    async def list_labelled(self, **labels: str) -> list[dict[str, Any]]:
        """Containers that carry our label (and the given ones), running or not."""
        filters = [f"{LABEL}=1", *(f"{k}={v}" for k, v in labels.items())]
        return list(await self._call(lambda: self._docker().api.containers(all=True, filters={"label": filters})))

    async def aclose(self) -> None:
        if self._client is not None:
            await asyncio.to_thread(self._client.close)
        self._pool.shutdown(wait=False)


def _wait_for_execs(api: Any, name: str, timeout: float = 10.0) -> None:
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


def _forget_runsc_state(container_id: str) -> None:
    """Drop runsc's stale record of a container Docker sees as exited. ``delete --force`` removes the
    record, then panics on the "paused => stopped" transition: its exit status says nothing."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(["runsc", "--root", _RUNSC_ROOT, "delete", "--force", container_id],
                       capture_output=True, timeout=30, check=False)


def _delete_checkpoint(api: Any, name: str) -> None:
    with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
        api._raise_for_status(api._delete(api._url("/containers/{0}/checkpoints/{1}", name, _CHECKPOINT)))


class OrphanFiles:
    """Read access to a stopped container's /mnt/data, so that its files can be kept."""

    def __init__(self, data: DataDir) -> None:
        self.data = data

    async def list_files(self) -> list[FileInfo]:
        return await asyncio.to_thread(self.data.list)

    async def export_file(self, path: str, dest: Path, *, max_bytes: int | None = None) -> FileInfo:
        return await asyncio.to_thread(self.data.export, path, dest, max_bytes=max_bytes)


class _ExecPipe:
    """The hijacked HTTP stream of a started ``docker exec``: stdin out, stdout back.

    Docker multiplexes a non-TTY exec's stdout and stderr into frames with an
    8-byte header; stdout is the channel, stderr is the relay's complaints, logged.
    """

    _HEADER = struct.Struct(">BxxxI")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._buffer = bytearray()

    @classmethod
    async def open(cls, endpoint: str, exec_id: str) -> _ExecPipe:
        if endpoint.startswith("unix://"):
            reader, writer = await asyncio.open_unix_connection(endpoint[len("unix://"):], limit=1 << 20)
        elif endpoint.startswith(("tcp://", "http://")):
            host, _, port = endpoint.split("://", 1)[1].rstrip("/").rpartition(":")
            reader, writer = await asyncio.open_connection(host, int(port), limit=1 << 20)
        else:
            raise ConfigError(f"cannot reach Docker at {endpoint!r}; use unix:// or tcp://")
        body = b'{"Detach": false, "Tty": false}'
        writer.write(b"POST /exec/%s/start HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n"
                     b"Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: %d\r\n\r\n%s"
                     % (exec_id.encode(), len(body), body))
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1] if head.startswith(b"HTTP/") else b""
        if status not in (b"101", b"200"):
            writer.close()
            raise KernelStartError(f"Docker refused to attach to the kernel relay (HTTP {status.decode()})")
        return cls(reader, writer)

    async def receive(self) -> bytes:
        while True:
            out = bytearray()
            buffer, pos = self._buffer, 0
            while len(buffer) - pos >= 8:
                kind, size = self._HEADER.unpack_from(buffer, pos)
                if len(buffer) - pos - 8 < size:
                    break
                payload = buffer[pos + 8:pos + 8 + size]
                if kind == 2:
                    log.warning("kernel relay: %s", bytes(payload).decode(errors="replace").rstrip())
                else:
                    out += payload
                pos += 8 + size
            del buffer[:pos]
            if out:
                return bytes(out)
            data = await self._reader.read(READ_CHUNK)
            if not data:
                return b""
            buffer += data

    async def send(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def aclose(self) -> None:
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()
