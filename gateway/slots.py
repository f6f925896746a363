"""Room for sandboxes on this host: admitted by the capacity policy, counting those still starting.

A sandbox holds a slot from the moment it is reserved (or taken from the warm pool)
until it is adopted as live, when the live count takes it over, or abandoned. When
there is no room, idle sandboxes make way (pooled ones first), and past the wait a
request gets 429 rather than an overloaded host.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace

import sandbox

from .capacity import Capacity, Refusal
from .errors import AtCapacity
from .pool import WarmPool
from .records import new_id

__all__ = ["Slots"]

log = logging.getLogger("codeinterp.gateway")


class Slots:
    def __init__(self, backend: sandbox.Backend, capacity: Capacity, *, limits: sandbox.Limits,
                 labels: Mapping[str, str], wait: float, pool_size: int, pool_pause: float,
                 live: Callable[[], int], evict_one: Callable[[], Awaitable[bool]]) -> None:
        self.backend, self.capacity, self.limits, self.labels = backend, capacity, limits, labels
        self.wait = wait  # seconds a new sandbox waits for room before 429
        self._live, self._evict_one = live, evict_one
        self.starting = 0  # slots held by sandboxes being started or set up, not yet live
        self._room = asyncio.Lock()
        self.pool = WarmPool(self._start_pooled, pool_size, pause=pool_pause,
                             may_start=lambda: self.refusal() is None)

    @property
    def in_use(self) -> int:
        return self._live() + self.starting + self.pool.ready + self.pool.starting

    def refusal(self) -> Refusal | None:
        # Sandboxes still starting do not show in the measured memory yet: the policy counts them.
        return self.capacity.refusal(self.in_use, starting=self.starting + self.pool.starting)

    async def _start_pooled(self) -> sandbox.Session:
        return await sandbox.Session.start(self.backend, f"pool-{new_id('')[:12]}", limits=self.limits,
                                           labels={**self.labels, "codeinterp.pooled": "1"})

    async def start(self, container_id: str, memory_limit: str) -> sandbox.Session:
        """A pooled sandbox when one fits, else a new one once there is room; 429 when there is none.

        The session holds a slot until ``adopted`` or ``abandon``.
        """
        if memory_limit == self.limits.memory and (pooled := self.pool.take()) is not None:
            self.starting += 1
            return pooled
        await self.reserve()
        try:
            return await sandbox.Session.start(
                self.backend, container_id, limits=replace(self.limits, memory=memory_limit),
                labels={**self.labels, "codeinterp.container": container_id})
        except BaseException:
            self.starting -= 1
            raise

    async def reserve(self) -> None:
        """Hold one more slot once there is room (evicting idle sandboxes); AtCapacity if none comes."""
        deadline = time.monotonic() + self.wait
        while True:
            async with self._room:
                refusal = self.refusal()
                if refusal is None:
                    self.starting += 1
                    break
            if refusal.evicting_helps and (await self.pool.release_one() or await self._evict_one()):
                continue
            if time.monotonic() >= deadline:
                busy = " and every sandbox is busy" if refusal.evicting_helps else ""
                log.warning("no room for a sandbox", extra={"reason": refusal.reason, "live": self.in_use})
                raise AtCapacity(f"No room for another sandbox now: {refusal.reason}{busy}. Retry shortly.",
                                 retry_after=5)
            await asyncio.sleep(0.25)

    def adopted(self) -> None:
        """The slot's sandbox is live now, and counted there."""
        self.starting -= 1

    async def abandon(self, session: sandbox.Session) -> None:
        self.starting -= 1
        await session.close()

    async def relieve_memory(self) -> int:
        """While free memory is under the reserve, expire idle sandboxes (pooled ones first, then the
        least recently used; files kept). Returns how many went."""
        gone = 0
        while self.capacity.short_of_memory() and (await self.pool.release_one() or await self._evict_one()):
            gone += 1
        if gone:
            log.warning("memory low: idle sandboxes expired", extra={"count": gone, "live": self._live()})
        return gone
