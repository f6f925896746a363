"""The composition root: the one place that builds the gateway's collaborators from Settings."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import Any

from fastapi import FastAPI

import sandbox
from sandbox import parse_size

from .app import create_app
from .auth import KeyRing
from .blobs import BlobStore
from .calls import CallService
from .capacity import Capacity, HostMeter
from .container_files import ContainerFiles
from .containers import ContainerService, SandboxDefaults
from .files import FileService
from .mcp_endpoint import McpEndpoint
from .metrics import Metrics
from .nodes import NodeDirectory, install_forwarding
from .records import ContainerRecord
from .routes.context import Services
from .settings import Settings
from .store import Store
from .toolserver import ToolLimits

__all__ = ["Gateway"]

log = logging.getLogger("codeinterp.gateway")


class Gateway:
    """Everything the service is made of, built lazily and once. Pass ``backend`` to use another one."""

    def __init__(self, settings: Settings, backend: sandbox.Backend | None = None) -> None:
        self.settings = settings
        self._backend = backend
        self._reaper: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._lag: asyncio.Task[None] | None = None

    @cached_property
    def instance(self) -> str:
        """A label shared by this data dir's containers, so that gateways never touch each other's."""
        return hashlib.sha256(str(self.settings.data_dir.resolve()).encode()).hexdigest()[:16]

    @cached_property
    def backend(self) -> sandbox.Backend:
        if self._backend is not None:
            return self._backend
        s = self.settings
        return sandbox.DockerBackend(sandbox.DockerConfig(
            image=s.image or None, work_root=s.work_root,
            data_quota=s.data_quota, runtime=s.runtime or None,
            labels={**s.container_labels, "codeinterp.instance": self.instance},
            hosts=s.docker_engines(), placement=sandbox.EnginePolicy(
                memory_reserve=parse_size(s.docker_memory_reserve), max_failures=s.docker_max_failures,
                recheck=s.docker_recheck)))

    @cached_property
    def store(self) -> Store:
        return Store(self.settings.db_url)

    @cached_property
    def blobs(self) -> BlobStore:
        return BlobStore(self.settings.files_dir, node=self.settings.node)

    @cached_property
    def nodes(self) -> NodeDirectory:
        s = self.settings
        return NodeDirectory(self.store, s.node, s.node_url, interval=s.heartbeat_interval, timeout=s.node_timeout)

    @cached_property
    def services(self) -> Services:
        s = self.settings
        files = FileService(self.store, self.blobs, s.max_upload_bytes)
        limits = sandbox.Limits(cpus=s.cpus, pids=s.pids_limit, tmp_size=s.tmp_size, timeout=s.default_timeout,
                                max_file_bytes=0,  # the gateway hashes while it copies; no need twice
                                data_size=s.data_size)
        containers = ContainerService(self.store, files, self.backend, SandboxDefaults(
            limits=limits, labels={"codeinterp.instance": self.instance}, max_file_ids=s.max_file_ids,
            thread_expiry_minutes=s.thread_expiry_minutes, capacity_wait=s.capacity_wait,
            pool_size=s.pool_size, pool_pause=s.pool_pause, host_memory=s.host_memory, hibernate=s.hibernate,
            checkpoint_budget=sandbox.parse_size(s.checkpoint_budget)), self.capacity, node=s.node, nodes=self.nodes)
        container_files = ContainerFiles(containers)
        calls = CallService(self.store, files, containers, container_files, s.default_timeout, s.max_timeout)
        return Services(files=files, containers=containers, container_files=container_files, calls=calls,
                        keys=KeyRing(s.api_keys), sse_keepalive=s.sse_keepalive)

    @cached_property
    def capacity(self) -> Capacity:
        s = self.settings
        meter = HostMeter(cgroup=Path(s.sandbox_cgroup) if s.sandbox_cgroup.strip() else None)
        return Capacity(meter, reserve=s.reserve_bytes(meter.total_memory()), per_sandbox=parse_size(s.sandbox_memory),
                        cpu_pressure_limit=s.cpu_pressure_limit, max_sandboxes=s.max_sandboxes)

    @cached_property
    def metrics(self) -> Metrics:
        containers = self.services.containers
        metrics = Metrics(sessions=lambda: containers.live_count, storage_bytes=lambda: self.blobs.used_bytes(),
                          hibernated=lambda: len(containers.hibernations),
                          checkpoint_bytes=lambda: containers.hibernations.bytes)
        containers.on_restore = metrics.observe_restore
        return metrics

    def app(self) -> FastAPI:
        s = self.settings
        mcp = McpEndpoint(self.services, ToolLimits(s.default_timeout, s.max_timeout),
                          idle_timeout=s.thread_expiry_minutes * 60)
        app = create_app(self.services, metrics=self.metrics, health=self.health,
                         max_upload_bytes=s.max_upload_bytes, on_startup=self.startup,
                         on_shutdown=self.shutdown, endpoints={"/mcp": mcp}, opentelemetry=s.opentelemetry)
        install_forwarding(app, self.nodes)
        return app

    async def health(self) -> dict[str, Any]:
        backend = self.backend
        containers = self.services.containers
        report: dict[str, Any] = {"status": "ok",
                                  "pool": {"ready": containers.pool.ready, "size": containers.pool.size},
                                  "sandboxes": self.capacity.report(containers.live_count)}
        if isinstance(backend, sandbox.DockerBackend):
            report["docker"] = await backend.ping()
            if len(backend.engines) > 1:
                report["engines"] = backend.engine_report()
            report["image"] = {"name": backend.image,
                               "present": await backend.image_present() if report["docker"] else False}
            if not (report["docker"] and report["image"]["present"]):
                report["status"] = "degraded"
        return report

    async def startup(self) -> None:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.blobs.create)  # sweeps and counts the whole store
        await self.store.migrate()
        await self.recover()
        await self.nodes.start()
        log.info("node started", extra={"node": self.settings.node, "url": self.nodes.url,
                                        "database": self.store.dialect, "file_store": str(self.blobs.root)})
        self.services.containers.pool.run()
        containers = self.services.containers
        self._reaper = asyncio.create_task(
            _every(self.settings.expiry_interval, containers.expire_idle, "expiry sweep"), name="expiry")
        self._watcher = asyncio.create_task(
            _every(self.settings.memory_check_interval, containers.relieve_memory, "memory check"), name="memory")
        self._lag = asyncio.create_task(self.metrics.watch_loop(), name="loop lag")

    async def recover(self) -> None:
        """After a stop or crash: no call of this node stays in progress, and no sandbox of ours is left running.

        Hibernated sandboxes of this node are adopted again (their next call wakes them). Running ones
        the store knows are expired with their /mnt/data kept (a thread's next call restores them);
        containers it does not know, pooled ones included, are removed. Only this node's rows are
        touched (and rows from before nodes were recorded): other gateways on the same database run on.
        Work dirs that no container mounts any more, left by sandboxes removed outside the gateway, are
        released.
        """
        node = self.settings.node
        for call in await self.store.calls_in_progress(node=node):
            await self.store.end_incomplete(call.id, "gateway restarted")
        leftovers: list[dict[str, Any]] = []
        if isinstance(self.backend, sandbox.DockerBackend):
            try:
                leftovers = await self.backend.list_labelled(**{"codeinterp.instance": self.instance})
            except sandbox.SandboxError:
                log.warning("cannot list leftover containers; is Docker up?")
        by_id = {c["Id"]: c for c in leftovers}
        for record in await self.store.containers_with_status("hibernated", node=node):
            if await self._adopt_hibernated(record, by_id.get(record.docker_id or "")):
                del by_id[record.docker_id or ""]
                leftovers = [c for c in leftovers if c["Id"] != record.docker_id]
            else:  # its checkpoint is gone: its files were kept when it hibernated
                await self.store.update_container(record.id, status="expired")
        for record in await self.store.containers_with_status("running", node=node):
            container = by_id.get(record.docker_id or "")
            source = self.backend.orphan_files(container) if container is not None and isinstance(
                self.backend, sandbox.DockerBackend) else None
            if source is not None:
                kept = await self.services.containers.save(record, source)
                log.info("kept files of a leftover sandbox", extra={"container_id": record.id, "files": kept})
            await self.store.update_container(record.id, status="expired", only_if="running", only_node=node)
        for container in leftovers:
            assert isinstance(self.backend, sandbox.DockerBackend)
            await self.backend.remove_container(container["Id"])
            await self.backend.remove_workdir(container)
        if leftovers:
            log.info("removed leftover containers", extra={"count": len(leftovers)})
        if isinstance(self.backend, sandbox.DockerBackend):
            try:  # sandboxes whose containers went some other way (docker rm): free their loop mounts
                await self.backend.release_stale_workdirs()
            except sandbox.SandboxError:
                log.warning("cannot list containers to release stale work dirs; is Docker up?")

    async def _adopt_hibernated(self, record: ContainerRecord, container: dict[str, Any] | None) -> bool:
        """Hand a hibernated sandbox left by the last gateway to the container service; False if it cannot be."""
        backend = self.backend
        if container is None or container.get("State") == "running" or not isinstance(backend, sandbox.Hibernation) \
                or not backend.can_hibernate or not self.settings.hibernate:
            return False
        try:
            session = await sandbox.Session.attach(
                backend, container["Id"], limits=replace(self.services.containers.defaults.limits,
                                                         memory=record.memory_limit))
            size = await backend.checkpoint_bytes(session.host)
        except sandbox.SandboxError:
            log.exception("cannot adopt a hibernated sandbox", extra={"container_id": record.id})
            return False
        if not size:
            log.warning("hibernated sandbox has no checkpoint", extra={"container_id": record.id})
        self.services.containers.hibernations.adopt(record.id, session, size)
        log.info("adopted a hibernated sandbox", extra={"container_id": record.id})
        return True

    async def shutdown(self) -> None:
        for task in (self._reaper, self._watcher, self._lag):
            if task is not None:
                task.cancel()
        # Background calls have no request for uvicorn to wait on: they get the same grace here.
        await self.services.calls.shutdown(self.settings.shutdown_grace)
        await self.services.containers.close_all()
        await self.nodes.stop()
        await self.store.close()
        await self.backend.aclose()


async def _every(seconds: float, job: Callable[[], Awaitable[object]], what: str) -> None:
    """Run ``job`` every ``seconds`` until cancelled; one failed round is logged, the next still runs."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await job()
        except Exception:
            log.exception(f"{what} failed")
