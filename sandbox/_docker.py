"""DockerBackend: one locked-down container per session, on one of the engines it knows."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions
from docker.models.containers import Container

from ._backend import KernelHost, SessionSpec, parse_size
from ._channel import Pipe
from ._checkpoints import Checkpointing
from ._container import CHANNEL, KEY_VAR, LABEL, PYTHON, RUN, DockerConfig, labels, run_arguments
from ._datadir import DataDir, Snapshot
from ._enginefiles import EngineFiles, OrphanFiles, RemoteOrphanFiles
from ._engines import DockerHost, Engine, Load, choose, measure, states
from ._errors import (
    BackendUnavailable,
    ImageNotFound,
    NoEngineAvailable,
    SandboxError,
)
from ._execpipe import ExecPipe
from ._inside import source
from ._results import KernelExit
from ._socketpipe import CHANNEL_DIR, SOCKET_NAME, ChannelListener
from ._volume import make_data_dir, release_stale_workdirs, release_workdir
from ._volumefiles import VolumeFiles, data_volume_options, keep_data

__all__ = ["LABEL", "DockerBackend", "DockerConfig"]

log = logging.getLogger("codeinterp.sandbox")
T = TypeVar("T")


def _nothing() -> None:
    pass


async def _finish_even_if_cancelled(work: Awaitable[None], undo: Callable[[], Awaitable[Any]]) -> None:
    """Await ``work``; on a cancel or an error let it finish (a thread cannot be stopped), then ``undo``."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except BaseException:
        with contextlib.suppress(BaseException):
            await task
        await undo()
        raise


class DockerBackend(EngineFiles, Checkpointing):
    """Kernels in containers with no network, as a non-root user, under limits, on one or more engines."""

    def __init__(self, config: DockerConfig | None = None) -> None:
        self.config = config or DockerConfig()
        self._pool = ThreadPoolExecutor(self.config.workers, thread_name_prefix="docker")
        self._image: str | None = self.config.image
        hosts = self.config.hosts or (DockerHost.from_environment(self.config.base_url),)
        self.engines = [Engine(h, self.config.placement, drains=len(hosts) > 1) for h in hosts]
        self._engines = {e.name: e for e in self.engines}
        self._where: dict[str, Engine] = {}  # container id -> its engine, for calls that name only an id
        self._starting: dict[str, int] = {}  # engine name -> memory of sandboxes being placed there
        self._remote_files = {e.name: VolumeFiles(e.client, e.exec_output, self.config.uid) for e in self.engines
                              if not e.host.local}
        self._baselines: dict[str, Snapshot] = {}  # remote hosts: the listing that ended the last execution

    async def _call(self, engine: Engine, fn: Callable[[], T], *, probe: bool = False) -> T:
        """Run a blocking Docker call on ``engine``; its outcome counts towards the engine's health.

        A ``probe`` (placement's) may ask a drained engine and counts nothing itself: the caller
        times it out and counts that, and a late answer of the abandoned thread must not count again.
        """
        if engine.drained and not probe:
            raise BackendUnavailable(f"Docker engine {engine.name} is drained (it stopped answering: "
                                     f"{engine.last_error}); its sandboxes are out of reach")
        loop = asyncio.get_running_loop()
        answered = engine.succeeded if not probe else _nothing
        try:
            result = await loop.run_in_executor(self._pool, fn)
        except docker.errors.ImageNotFound as exc:
            answered()
            raise ImageNotFound(f"kernel image {self.image} is not on engine {engine.name}; run "
                                "`codeinterp image build` (or load it there)") from exc
        except docker.errors.NotFound as exc:
            answered()
            raise SandboxError(f"container vanished: {exc.explanation}") from exc
        except docker.errors.APIError as exc:
            answered()
            raise SandboxError(f"Docker refused: {exc.explanation}") from exc
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            if not probe:
                engine.failed(str(exc))
            raise BackendUnavailable(
                f"Docker engine {engine.name} is not reachable ({exc}); start it with `scripts/docker-up.sh`"
            ) from exc
        answered()
        return result

    async def _run_on(self, host: KernelHost, fn: Callable[[], T]) -> T:
        return await self._call(self._engine(host), fn)

    def _engine(self, host: KernelHost | str) -> Engine:
        if isinstance(host, KernelHost):
            return self._engines.get(host.engine) or self.engines[0]
        return self._where.get(host) or self.engines[0]

    @property
    def image(self) -> str:
        if self._image is None:
            from ._image import default_image

            self._image = default_image()
        return self._image

    async def ping(self) -> bool:
        """True when at least one engine answers."""
        answers = await asyncio.gather(*(self._ping(e) for e in self.engines))
        return any(answers)

    async def _ping(self, engine: Engine) -> bool:
        try:
            return bool(await self._call(engine, lambda: engine.client().ping()))
        except SandboxError:
            return False

    async def image_present(self) -> bool:
        """True when the kernel image is on every engine that answers."""
        async def on(engine: Engine) -> bool | None:
            try:
                await self._call(engine, lambda: engine.client().images.get(self.image))
            except ImageNotFound:
                return False
            except BackendUnavailable:
                return None
            return True
        found = [f for f in await asyncio.gather(*(on(e) for e in self.engines)) if f is not None]
        return bool(found) and all(found)

    # -- placement -------------------------------------------------------------------------

    async def _place(self, memory: int) -> Engine:
        if len(self.engines) == 1 and not self.engines[0].drains:
            lone = self.engines[0]  # nowhere else to go: no listing on the way
            self._starting[lone.name] = self._starting.get(lone.name, 0) + memory
            return lone
        now = time.monotonic()
        asked = [e for e in self.engines if e.placeable(now)]
        policy = self.config.placement

        async def load(engine: Engine) -> Load | None:
            try:
                found = await asyncio.wait_for(self._call(engine, lambda: measure(engine, LABEL), probe=True),
                                               policy.probe_timeout)
            except TimeoutError:
                engine.failed(f"no answer within {policy.probe_timeout} s")
            except BackendUnavailable as exc:
                engine.failed(str(exc))
            except SandboxError:
                engine.succeeded()  # it answered, with a refusal: not a candidate this time
            else:
                engine.succeeded()
                return found
            return None
        # Sandboxes this backend is still starting count too (one already listed counts twice until its
        # start returns: on the safe side). Read here, on the event loop, and reserved below with no
        # await in between, so that concurrent placements each see the others.
        loads = [Load(x.engine, x.committed + self._starting.get(x.engine.name, 0), x.sandboxes)
                 for x in await asyncio.gather(*(load(e) for e in asked)) if x is not None]
        chosen = choose(loads, memory, policy.memory_reserve)
        if chosen is None:
            raise NoEngineAvailable(f"no Docker engine can take a sandbox of {memory >> 20} MiB now "
                                    f"({states(self.engines, loads, policy.memory_reserve)})")
        self._starting[chosen.engine.name] = self._starting.get(chosen.engine.name, 0) + memory
        return chosen.engine

    async def start(self, spec: SessionSpec) -> KernelHost:
        memory = spec.limits.memory_bytes
        engine = await self._place(memory)  # reserves ``memory`` there until the start is done
        try:
            return await self._start_on(engine, spec)
        finally:
            self._starting[engine.name] -= memory

    async def _start_on(self, engine: Engine, spec: SessionSpec) -> KernelHost:
        key = secrets.token_hex(6)
        limits = spec.limits
        hmac_key = secrets.token_hex(32)
        root = self.config.work_root / key
        data: DataDir | None = None
        if engine.host.local:
            data = DataDir(root / "data", uid=self.config.uid)
            channel = await self._socket_channel(engine)
            await _finish_even_if_cancelled(
                asyncio.to_thread(self._prepare_dirs, root, data, parse_size(limits.data_size), channel),
                lambda: asyncio.to_thread(release_workdir, root))
            mount: dict[str, Any] = {str(data.path): {"bind": "/mnt/data", "mode": "rw"}}
            if channel:
                mount[str(root / CHANNEL_DIR)] = {"bind": CHANNEL, "mode": "ro"}
        else:
            volume = f"codeinterp-data-{key}"
            await self._call(engine, lambda: engine.client().api.create_volume(
                volume, driver="local", driver_opts=data_volume_options(
                    self.config.data_quota, parse_size(limits.data_size), self.config.uid),
                labels=labels(self.config, spec)))
            mount = {volume: {"bind": "/mnt/data", "mode": "rw"}}
        run_args = run_arguments(self.config, spec, self.image, key, hmac_key, mount)

        async def undo() -> None:
            if data is not None:
                await asyncio.to_thread(release_workdir, root)
            else:
                with contextlib.suppress(SandboxError):
                    await self._call(engine, lambda: engine.client().api.remove_volume(volume, force=True))
        creating = asyncio.ensure_future(self._call(engine, lambda: engine.client().containers.run(**run_args)))
        try:
            container: Container = await asyncio.shield(creating)
        except asyncio.CancelledError:
            # Docker goes on creating it in its thread: wait for that, then remove it, or it leaks.
            with contextlib.suppress(Exception):
                await self.remove_container((await creating).id or "", engine=engine)
            await undo()
            raise
        except BaseException:
            await undo()
            raise
        self._where[container.id or ""] = engine
        return KernelHost(session_id=spec.session_id, name=container.id or "", key=hmac_key, data=data,
                          engine=engine.name)

    async def _socket_channel(self, engine: Engine) -> bool:
        """Whether a local sandbox's relay reaches us over a socket (sandbox/_socketpipe.py): under runc only,
        also when runc is just the engine's default (a default of runsc keeps the exec stream)."""
        if self.config.runtime:
            return bool(self.config.runtime == "runc")
        if engine.default_runtime is None:
            info: dict[str, Any] = await self._call(engine, lambda: engine.client().info())
            engine.default_runtime = str(info.get("DefaultRuntime") or "runc")
        return engine.default_runtime == "runc"

    def _prepare_dirs(self, root: Path, data: DataDir, data_size: int, channel: bool) -> None:
        root.mkdir(parents=True, mode=0o700)
        if channel:
            (root / CHANNEL_DIR).mkdir(mode=0o755)
        make_data_dir(data, size=data_size, mode=self.config.data_quota)

    async def connect(self, host: KernelHost) -> Pipe:
        """A relay beside the kernel, run with ``docker exec``: over a socket we listen on when the
        container mounts one (sandbox/_socketpipe.py), else its stdin and stdout are the channel."""
        engine = self._engine(host)
        channel = host.data.path.parent / CHANNEL_DIR if host.data is not None else None
        listener = await asyncio.to_thread(ChannelListener.open_in, channel)
        relay = [source("relay"), f"{RUN}/connection.json"]
        command = ([PYTHON, "-I", "-c", source("dial"), f"{CHANNEL}/{SOCKET_NAME}", *relay] if listener
                   else [PYTHON, "-I", "-c", *relay])

        def create() -> str:
            created = engine.client().api.exec_create(host.name, command, stdin=listener is None, stdout=True,
                                                      stderr=True, user=f"{self.config.uid}:{self.config.uid}")
            return str(created["Id"])
        try:
            exec_id = await self._call(engine, create)
            # An engine that takes the connection and then says nothing must not hold the start forever.
            timeout = self.config.placement.timeout
            stream = await asyncio.wait_for(ExecPipe.open(engine.host.url, exec_id, engine.ssl_context()), timeout)
            if listener is None:
                return stream

            async def pid() -> int:
                return int(await self._call(engine, lambda: engine.client().api.exec_inspect(exec_id)["Pid"]))
            try:
                return await listener.accept(stream, pid, timeout)
            except BaseException:
                await stream.aclose()
                raise
        except (OSError, EOFError, asyncio.LimitOverrunError) as exc:  # TimeoutError is an OSError
            engine.failed(str(exc))
            raise BackendUnavailable(f"cannot attach to the kernel relay on {engine.name} ({exc}); "
                                     "is Docker running? `scripts/docker-up.sh`") from exc
        finally:
            if listener is not None:
                listener.close()

    async def stop(self, host: KernelHost) -> None:
        # The container first: it holds the data mount, which can only go once it is gone.
        try:
            await self.remove_container(host.name, engine=self._engine(host))
        finally:
            self._baselines.pop(host.name, None)
            if host.data is not None:
                await asyncio.to_thread(release_workdir, host.data.path.parent)

    async def remove_container(self, name: str, *, engine: Engine | None = None) -> None:
        """Remove a container and, on a remote engine, its /mnt/data volume."""
        engine = engine or self._engine(name)

        def remove() -> None:
            api = engine.client().api
            try:
                volumes = [] if engine.host.local else [  # a local sandbox's /mnt/data is a directory here
                    m["Name"] for m in api.inspect_container(name).get("Mounts") or []
                    if m.get("Destination") == "/mnt/data" and m.get("Type") == "volume"]
                api.remove_container(name, force=True, v=True)
            except docker.errors.NotFound:
                return
            for volume in volumes:
                with contextlib.suppress(docker.errors.NotFound):
                    api.remove_volume(volume, force=True)
        if engine.drained:
            log.warning("not removing a sandbox on a drained engine", extra={"engine": engine.name})
            return
        await self._call(engine, remove)
        self._where.pop(name, None)

    def _data_dir_of(self, container: Mapping[str, Any]) -> Path | None:
        """The host side of a listed container's /mnt/data, if it lies in our work root."""
        for mount in container.get("Mounts") or []:
            source = Path(mount.get("Source", ""))
            if mount.get("Destination") == "/mnt/data" and source.parent.parent == self.config.work_root:
                return source
        return None

    def orphan_files(self, container: Mapping[str, Any]) -> OrphanFiles | RemoteOrphanFiles | None:
        """The /mnt/data of a listed container that no session holds (after a crash), if it is ours."""
        engine = self._where.get(str(container.get("Id", "")))
        if engine is not None and not engine.host.local:
            return RemoteOrphanFiles(self, KernelHost(session_id="", name=str(container["Id"]), key="", data=None,
                                                      engine=engine.name))
        source = self._data_dir_of(container)
        return OrphanFiles(DataDir(source, uid=self.config.uid)) if source is not None else None

    async def remove_workdir(self, container: Mapping[str, Any]) -> None:
        """Delete the data and socket dirs of a listed container (unmounting the quota), if they are ours."""
        source = self._data_dir_of(container)
        if source is not None:
            await asyncio.to_thread(release_workdir, source.parent)

    async def release_stale_workdirs(self, *, older_than: float = 600) -> int:
        """Unmount and delete the work dirs whose containers are gone, removed outside this library; how many.

        Every container on the local engines counts, running or not (a hibernated one keeps its dir), and
        a listing that fails raises before anything is touched.
        """
        async def listing(engine: Engine) -> list[dict[str, Any]]:
            return list(await self._call(engine, lambda: engine.client().api.containers(all=True)))
        listed = await asyncio.gather(*(listing(e) for e in self.engines if e.host.local))
        in_use = {source.parent for found in listed for c in found if (source := self._data_dir_of(c)) is not None}
        return await asyncio.to_thread(release_stale_workdirs, self.config.work_root, in_use, older_than=older_than)

    async def adopt(self, name: str) -> KernelHost:
        engine = self._where.get(name) or await self._find(name)
        info = await self._call(engine, lambda: engine.client().api.inspect_container(name))
        env = dict(item.partition("=")[::2] for item in info["Config"].get("Env") or [])
        source = self._data_dir_of(info)
        if KEY_VAR not in env or (source is None and engine.host.local):
            raise SandboxError(f"container {name[:12]} is not one of this backend's sandboxes")
        session = (info["Config"].get("Labels") or {}).get(f"{LABEL}.session", "")
        self._where[info["Id"]] = engine
        return KernelHost(session_id=session, name=info["Id"], key=env[KEY_VAR],
                          data=DataDir(source, uid=self.config.uid) if source is not None else None,
                          engine=engine.name)

    async def _find(self, name: str) -> Engine:
        for engine in self.engines:
            with contextlib.suppress(SandboxError):
                await self._call(engine, lambda e=engine: e.client().api.inspect_container(name))  # type: ignore[misc]
                return engine
        raise SandboxError(f"no engine holds container {name[:12]}")

    async def interrupt(self, host: KernelHost) -> None:
        engine = self._engine(host)

        # tini (PID 1, run with -g) forwards SIGINT to the kernel's process group.
        def kill() -> None:
            try:
                engine.client().api.kill(host.name, signal="SIGINT")
            except docker.errors.APIError:
                pass  # not running: nothing to interrupt
        await self._call(engine, kill)

    async def restart(self, host: KernelHost) -> None:
        engine = self._engine(host)
        self._baselines.pop(host.name, None)

        def cycle() -> None:
            api = engine.client().api
            # A remote /mnt/data is a tmpfs that goes when the container stops: carry it across.
            with keep_data(api, host.name, enabled=not engine.host.local):
                try:
                    api.kill(host.name, signal="SIGKILL")
                except docker.errors.APIError:
                    pass
                api.wait(host.name, timeout=30)
                api.start(host.name)
        await self._call(engine, cycle)

    async def poll(self, host: KernelHost) -> KernelExit | None:
        engine = self._engine(host)
        state = (await self._call(engine, lambda: engine.client().api.inspect_container(host.name)))["State"]
        if state.get("Running"):
            return None
        return KernelExit(exit_code=state.get("ExitCode"), oom_killed=bool(state.get("OOMKilled")))

    async def list_labelled(self, **labels: str) -> list[dict[str, Any]]:
        """Containers that carry our label (and the given ones), running or not, on every engine that answers."""
        filters = [f"{LABEL}=1", *(f"{k}={v}" for k, v in labels.items())]

        async def on(engine: Engine) -> list[dict[str, Any]]:
            found = list(await self._call(
                engine, lambda: engine.client().api.containers(all=True, filters={"label": filters})))
            for container in found:
                self._where[container["Id"]] = engine
            return found
        results = await asyncio.gather(*(on(e) for e in self.engines), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if len(failures) == len(results):
            raise failures[0]
        return [c for r in results if not isinstance(r, BaseException) for c in r]

    def engine_report(self) -> list[dict[str, Any]]:
        """Each engine's state (ok, failing, drained), for health reports."""
        return [e.describe() for e in self.engines]

    async def aclose(self) -> None:
        for engine in self.engines:
            await asyncio.to_thread(engine.close)
        self._pool.shutdown(wait=False)
