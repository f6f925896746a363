"""Containers: each one a record in the store and, while running, a live sandbox session.

A live session is leased while a call uses it, so that expiry and eviction only
ever take idle ones. Expiring keeps every file in /mnt/data in the file store.
Where the runtime can (gVisor), an expiring sandbox also hibernates: its whole
memory goes to a checkpoint on disk, and the next call wakes it with every
variable intact. Otherwise, or when a wake fails, a thread's next call restores
the kept files into a new sandbox.

Deleting interrupts the calls running in the container (each ends ``incomplete``
with ``container_deleted``), waits for every lease to end, then removes the sandbox
(a hibernated one with its checkpoint). A thread's container is created, restored
and deleted under the thread's lock, so a delete can never race a restore into an
untracked sandbox.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

import sandbox

from .capacity import Capacity
from .container_files import place
from .errors import BadRequest, Conflict, HeldElsewhere, NotFound
from .files import FileService
from .hibernations import Hibernations
from .leases import Leases
from .nodes import NodeDirectory
from .records import ContainerRecord, FileRecord, Page, new_id
from .revival import Restored, revive
from .slots import Slots
from .store import Store
from .transfer import FileSource, save_files

__all__ = ["MEMORY_LIMITS", "ContainerService", "SandboxDefaults"]

log = logging.getLogger("codeinterp.gateway")
MEMORY_LIMITS = ("1g", "4g", "16g", "64g")


@dataclass(frozen=True)
class SandboxDefaults:
    limits: sandbox.Limits
    labels: Mapping[str, str]
    max_file_ids: int
    thread_expiry_minutes: float
    capacity_wait: float  # seconds a new sandbox waits for room before 429
    pool_size: int
    pool_pause: float
    host_memory: int = 0  # bytes of RAM on this host: no container may ask for more; 0 skips the check
    hibernate: bool = True  # idle sandboxes hibernate (memory kept) where the runtime can, else expire
    checkpoint_budget: int = 10 << 30  # bytes of checkpoints at most; the least recently used drop to files


class ContainerService:
    def __init__(self, store: Store, files: FileService, backend: sandbox.Backend,
                 defaults: SandboxDefaults, capacity: Capacity, *, node: str = "local",
                 nodes: NodeDirectory | None = None) -> None:
        self.store, self.files, self.backend, self.defaults = store, files, backend, defaults
        self.capacity = capacity
        self.node = node  # this gateway's name: recorded on the containers whose sandboxes it holds
        self.nodes = nodes  # the other gateways on this database, if any may be
        self._live: dict[str, sandbox.Session] = {}
        # The record of each live thread's container, so that a thread's call needs no query to find
        # it. Only trusted while its id is in _live: expiry and delete take it out of _live first.
        self._thread_records: dict[tuple[str, str], ContainerRecord] = {}
        self.leases = Leases()
        # Weak: a thread's lock lives while a request holds or waits on it, not for ever.
        self._thread_locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = \
            weakref.WeakValueDictionary()
        # Hibernated: not in _live, and not counted in in_use.
        self.hibernations = Hibernations(store, enabled=defaults.hibernate, budget=defaults.checkpoint_budget)
        self.on_restore: Callable[[str, float], None] | None = None  # (kind, seconds), for metrics
        self._expiring: dict[str, asyncio.Event] = {}  # set once a container's files are saved
        self.slots = Slots(backend, capacity, limits=defaults.limits, labels=defaults.labels,
                           wait=defaults.capacity_wait, pool_size=defaults.pool_size, pool_pause=defaults.pool_pause,
                           live=lambda: len(self._live), evict_one=self._evict_one)
        self.pool = self.slots.pool

    @property
    def live_count(self) -> int:
        return len(self._live)

    def is_live(self, container_id: str) -> bool:
        """Whether its sandbox runs here now (not expired, hibernated or held by another gateway)."""
        return container_id in self._live

    @property
    def in_use(self) -> int:
        return self.slots.in_use

    # -- sandboxes and capacity ---------------------------------------------------

    def _adopt(self, container_id: str, session: sandbox.Session) -> None:
        self._live[container_id] = session
        self.slots.adopted()

    async def _settled(self, container_id: str) -> None:
        """Wait until an expiry under way has saved the container's files."""
        expiring = self._expiring.get(container_id)
        if expiring is not None:
            await expiring.wait()

    async def _evict_one(self) -> bool:
        """Expire the least recently used idle sandbox, files kept. True if one was."""
        idle = [(s.last_active, cid) for cid, s in self._live.items() if not self.leases.held(cid)]
        for _, container_id in sorted(idle):
            if await self.expire(container_id, reason="evicted"):
                return True
        return False

    async def lease_awake(self, record: ContainerRecord) -> tuple[sandbox.Session, Restored | None]:
        """Like ``lease``, but a hibernated sandbox is woken first (and how it came back is returned)."""
        restored = None
        if record.id in self.hibernations or record.id in self._expiring:
            async with self._thread_lock(record.owner, record.thread_id or record.id):
                await self._settled(record.id)
                if record.id in self.hibernations:
                    woken = await self._restore(record)
                    if woken is None:  # deleted, or taken by another gateway, meanwhile
                        raise Conflict(f"Container {record.id} is no longer available here.", param="container_id")
                    record, restored = woken
        return self.lease(record), restored

    async def relieve_memory(self) -> int:
        return await self.slots.relieve_memory()

    def lease(self, record: ContainerRecord) -> sandbox.Session:
        """The live session, held against expiry until ``release``."""
        if record.id in self.leases.deleting:
            raise NotFound(f"No such Container object: {record.id} (it was deleted)", param="container_id")
        session = self._live.get(record.id)
        if session is None and record.status in ("running", "hibernated") and record.node not in (None, self.node):
            raise HeldElsewhere(record.node)  # forwarded to that gateway, if it is alive
        if session is None or session.closed:
            state = "expired" if record.status in ("expired", "running") else record.status
            raise Conflict(f"Container {record.id} is {state}; its files can still be listed and downloaded. "
                           "Create a new container to run code.", param="container_id")
        self.leases.take(record.id)
        return session

    def release(self, container_id: str) -> None:
        self.leases.release(container_id)

    def on_delete(self, container_id: str, interrupt: Callable[[], None]) -> Callable[[], None]:
        """Call ``interrupt`` if the container is deleted (at once if it is being deleted); returns the undo."""
        return self.leases.on_delete(container_id, interrupt)

    @asynccontextmanager
    async def leased(self, record: ContainerRecord) -> AsyncIterator[sandbox.Session]:
        """The live session for one operation (woken if it hibernated); it cannot expire or be evicted meanwhile."""
        session, _ = await self.lease_awake(record)
        try:
            yield session
        finally:
            self.release(record.id)

    # -- lifecycle -----------------------------------------------------------------

    async def create(self, owner: str, *, name: str, file_ids: Sequence[str] = (), expires_minutes: float = 20,
                     memory_limit: str = "1g") -> ContainerRecord:
        record = await self._create(owner, name=name, file_ids=file_ids, expires_minutes=expires_minutes,
                                    memory_limit=memory_limit)
        assert record is not None  # only a thread's container can lose the race to be made
        return record

    async def _create(self, owner: str, *, name: str, file_ids: Sequence[str] = (), expires_minutes: float = 20,
                      memory_limit: str = "1g", thread_id: str | None = None) -> ContainerRecord | None:
        """A new container; None when ``thread_id`` already has one (another gateway made it meanwhile)."""
        self.check_memory_limit(memory_limit)
        stored = await self.check_file_ids(owner, file_ids)
        container_id = new_id("cntr_")
        session = await self.slots.start(container_id, memory_limit)
        now = time.time()
        record = ContainerRecord(id=container_id, owner=owner, name=name, thread_id=thread_id, status="running",
                                 created_at=int(now), last_active_at=now, expires_minutes=expires_minutes,
                                 memory_limit=memory_limit, docker_id=session.host.name, node=self.node)
        added = False
        try:
            added = await self.store.add_container(record)
            if not added:
                await self.slots.abandon(session)
                return None
            for file_record in stored:
                await place(self.store, self.files, container_id, session, file_record)
        except BaseException:
            # The caller never learns this container's id: it must not outlive the request.
            await self.slots.abandon(session)
            if added:
                await self.store.update_container(container_id, status="deleted", thread_id=None)
            raise
        self._adopt(container_id, session)
        log.info("container created", extra={"container_id": container_id, "files": len(stored)})
        return record

    def check_memory_limit(self, memory_limit: str) -> None:
        """BadRequest for a memory_limit OpenAI does not offer, or one larger than this host's RAM."""
        if memory_limit not in MEMORY_LIMITS:
            raise BadRequest(f"Invalid memory_limit {memory_limit!r}; use one of {', '.join(MEMORY_LIMITS)}.",
                             param="memory_limit")
        host = self.defaults.host_memory
        if host and sandbox.parse_size(memory_limit) > host:
            fits = [m for m in MEMORY_LIMITS if sandbox.parse_size(m) <= host]
            raise BadRequest(f"memory_limit {memory_limit} is more than this host has ({host / (1 << 30):.1f} GiB "
                             f"of RAM); use {' or '.join(fits) or 'a smaller limit'}.", param="memory_limit")

    async def check_file_ids(self, owner: str, file_ids: Sequence[str]) -> list[FileRecord]:
        """The stored files, or BadRequest for too many and NotFound for one that is not the owner's."""
        if len(file_ids) > self.defaults.max_file_ids:
            raise BadRequest(f"At most {self.defaults.max_file_ids} file_ids are allowed; got {len(file_ids)}.",
                             param="file_ids")
        return [await self.files.get(owner, file_id) for file_id in dict.fromkeys(file_ids)]

    async def get(self, owner: str, container_id: str) -> ContainerRecord:
        record = await self.store.get_container(owner, container_id)
        if record is None:
            raise NotFound(f"No such Container object: {container_id}", param="container_id")
        return record

    async def touch(self, record: ContainerRecord) -> ContainerRecord:
        now = time.time()
        await self.store.update_container(record.id, last_active_at=now)
        return replace(record, last_active_at=now)

    async def page(self, owner: str, *, limit: int, order: str, after: str | None) -> Page:
        return await self.store.list_containers(owner, limit=limit, order=order, after=after)

    def _thread_lock(self, owner: str, thread_id: str) -> asyncio.Lock:
        lock = self._thread_locks.get((owner, thread_id))
        if lock is None:
            lock = self._thread_locks[(owner, thread_id)] = asyncio.Lock()
        return lock

    async def delete(self, owner: str, container_id: str) -> None:
        """Interrupt its running calls, wait for them to end, remove the sandbox; its files are not kept."""
        record = await self.get(owner, container_id)
        if record.id not in self._live:
            await self.check_holder(record)  # its sandbox is on another gateway: delete it there
        if record.thread_id is None:
            await self._delete(record.id)
            return
        async with self._thread_lock(owner, record.thread_id):
            await self._delete((await self.get(owner, container_id)).id)

    async def delete_thread(self, owner: str, thread_id: str) -> None:
        """Delete the thread's container; the thread's next call starts a new one."""
        async with self._thread_lock(owner, thread_id):
            record = await self.store.container_for_thread(owner, thread_id)
            if record is None or record.status == "deleted":
                raise NotFound(f"Thread {thread_id} has no code interpreter sandbox.", param="thread_id")
            if record.id not in self._live:
                await self.check_holder(record)
            await self._delete(record.id)

    async def _delete(self, container_id: str) -> None:
        if container_id in self.leases.deleting:
            raise NotFound(f"No such Container object: {container_id} (it is being deleted)",
                           param="container_id")
        self.leases.deleting.add(container_id)
        self._forget_thread(container_id)  # before any await: the thread's next call must not find it
        # Shielded: a client that hangs up must not leave the container half deleted.
        await asyncio.shield(asyncio.ensure_future(self._remove(container_id)))

    async def _remove(self, container_id: str) -> None:
        try:
            await self._settled(container_id)
            # First: from here on no lookup finds it, so nothing can lease or restore it.
            await self.store.update_container(container_id, status="deleted", thread_id=None)
            # An interrupted call ends within the interrupt grace, or a kernel restart if it ignores it.
            limits = self.defaults.limits
            await self.leases.interrupt_and_wait(container_id, limits.interrupt_grace + limits.start_timeout + 30)
            asleep = self.hibernations.take(container_id)
            session = self._live.pop(container_id, None) or (asleep[0] if asleep else None)
            if session is not None:
                await session.close()  # a hibernated one's checkpoint goes with its container
        finally:
            self.leases.deleted(container_id)
        log.info("container deleted", extra={"container_id": container_id})

    async def thread_session(self, owner: str, thread_id: str, *, memory_limit: str | None = None,
                             ) -> tuple[ContainerRecord, sandbox.Session, Restored | None]:
        """The thread's leased session: made on first use, woken or restored after expiry, never made twice.

        ``memory_limit`` is for a new sandbox; it is fixed for a container's life, so asking an
        existing one for another is a Conflict.
        """
        async with self._thread_lock(owner, thread_id):
            known = self._thread_records.get((owner, thread_id))
            if (known is not None and known.id in self._live and known.id not in self.leases.deleting
                    and memory_limit in (None, known.memory_limit)):
                return known, self.lease(known), None
            while True:
                record = await self.store.container_for_thread(owner, thread_id)
                restored = None
                if record is None:
                    record = await self._create(owner, name=f"thread {thread_id}", thread_id=thread_id,
                                                expires_minutes=self.defaults.thread_expiry_minutes,
                                                memory_limit=memory_limit or "1g")
                    if record is None:  # another gateway made it first: use that one
                        continue
                elif memory_limit is not None and memory_limit != record.memory_limit:
                    raise Conflict(f"Thread {thread_id}'s container has memory_limit {record.memory_limit}, fixed "
                                   f"for its life; end it (DELETE /v1/threads/{thread_id}/code_interpreter) to get "
                                   f"{memory_limit}.", param="container.memory_limit")
                elif record.id not in self._live:
                    await self.check_holder(record)
                    claimed = await self._restore(record)
                    if claimed is None:  # another gateway restored it first
                        continue
                    record, restored = claimed
                session = self.lease(record)
                self._thread_records[(owner, thread_id)] = record
                return record, session, restored

    async def check_holder(self, record: ContainerRecord) -> None:
        """HeldElsewhere when another live gateway holds the record's sandbox; its requests go there."""
        if record.status not in ("running", "hibernated") or record.node in (None, self.node) or self.nodes is None:
            return
        url = await self.nodes.live_url(record.node)
        if url is not None:
            raise HeldElsewhere(record.node, url)

    def _forget_thread(self, container_id: str) -> None:
        for key in [k for k, r in self._thread_records.items() if r.id == container_id]:
            del self._thread_records[key]

    async def _restore(self, record: ContainerRecord) -> tuple[ContainerRecord, Restored] | None:
        """Bring an idle record back: woken from hibernation, or else a new sandbox with its kept files.

        The record is claimed for this node first (a conditional update on the holder read), so that of
        two gateways restoring it at once one wins; None for the other. A dead holder's calls in progress
        in it become incomplete.
        """
        await self._settled(record.id)  # its files may still be on their way into the store
        hibernated = record.id in self.hibernations
        if not await self.store.claim(record.id, node=self.node, held_by=record.node):
            return None
        if record.node not in (None, self.node):
            log.warning("took over a thread's container from a gateway that is gone",
                        extra={"container_id": record.id, "node": record.node})
        started = time.monotonic()
        session, restored = await revive(record, wake=hibernated, store=self.store, files=self.files,
                                         slots=self.slots, hibernations=self.hibernations)
        self._adopt(record.id, session)
        record = await self._running(record, session)
        self._observe(restored.kind, started)
        log.info("container woken" if restored.kind == "memory" else "container restored",
                 extra={"container_id": record.id})
        return record, restored

    async def _running(self, record: ContainerRecord, session: sandbox.Session) -> ContainerRecord:
        now = time.time()
        await self.store.update_container(record.id, status="running", docker_id=session.host.name,
                                          last_active_at=now)
        return replace(record, status="running", docker_id=session.host.name, last_active_at=now, node=self.node)

    def _observe(self, kind: str, started: float) -> None:
        if self.on_restore is not None:
            self.on_restore(kind, time.monotonic() - started)

    async def expire(self, container_id: str, *, reason: str, force: bool = False) -> bool:
        """Hibernate an idle sandbox, or stop it, keeping its files either way.

        False if it is leased (unless forced) or not live. The files go to the store first, so
        that a wake that fails later can fall back on them.
        """
        session = self._live.get(container_id)
        if session is None or container_id in self.leases.deleting or (self.leases.held(container_id) and not force):
            return False
        del self._live[container_id]  # before any await: no new lease can take it now
        self._forget_thread(container_id)
        saved = self._expiring[container_id] = asyncio.Event()
        hibernated = False
        try:
            try:
                record = await self.store.container_by_id(container_id)
                if record is not None:
                    await self.save(record, session)
            finally:
                hibernated = await self.hibernations.sleep(container_id, session)
        finally:
            # Only a running record of ours expires: a delete meanwhile stays deleted.
            await self.store.update_container(container_id, status="hibernated" if hibernated else "expired",
                                              only_if="running", only_node=self.node)
            del self._expiring[container_id]
            saved.set()
        log.info("container hibernated" if hibernated else "container expired",
                 extra={"container_id": container_id, "reason": reason})
        if hibernated:
            await self.hibernations.within_budget()
        return True

    async def save(self, record: ContainerRecord, source: FileSource) -> int:
        return await save_files(self.store, self.files, record, source)

    async def expire_idle(self) -> int:
        """Expire every live sandbox idle past its expires_after; returns how many."""
        now = time.time()
        expired = 0
        for record in await self.store.containers_with_status("running"):
            if record.id in self._live and record.last_active_at + record.expires_minutes * 60 <= now:
                expired += await self.expire(record.id, reason="idle")
        return expired

    async def close_all(self) -> None:
        """At shutdown: every sandbox hibernates (or expires) with its files kept; the pool's are removed.

        Hibernated sandboxes stay on disk: the next gateway on this data dir adopts them.
        """
        await self.pool.close()
        for container_id in list(self._live):
            try:
                await self.expire(container_id, reason="shutdown", force=True)
            except Exception:  # one failure must not keep the others running
                log.exception("could not expire at shutdown", extra={"container_id": container_id})
