"""Sandboxes asleep: no RAM and no process, their memory in a checkpoint on disk, under a byte budget.

Only sandboxes whose runtime can checkpoint (gVisor) hibernate; the others expire
with their files kept. When the checkpoints outgrow the budget, the least recently
used drop to files-only: their next call restores the files into a new kernel.
"""

from __future__ import annotations

import logging

import sandbox

from .store import Store

__all__ = ["Hibernations"]

log = logging.getLogger("codeinterp.gateway")


class Hibernations:
    def __init__(self, store: Store, *, enabled: bool, budget: int) -> None:
        self.store = store
        self.enabled = enabled  # False: idle sandboxes always expire, even where they could hibernate
        self.budget = budget  # bytes of checkpoints at most
        self._sessions: dict[str, sandbox.Session] = {}
        self._sizes: dict[str, int] = {}  # bytes of each one's checkpoint

    def __contains__(self, container_id: object) -> bool:
        return container_id in self._sessions

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def bytes(self) -> int:
        return sum(self._sizes.values())

    def adopt(self, container_id: str, session: sandbox.Session, size: int) -> None:
        """A hibernated sandbox (one that just slept, or one found at startup): wakeable by its next call."""
        self._sessions[container_id] = session
        self._sizes[container_id] = size

    def take(self, container_id: str) -> tuple[sandbox.Session, int] | None:
        """The sleeping session and its checkpoint's size, no longer counted here: to wake it, or to remove
        it with its container."""
        session = self._sessions.pop(container_id, None)
        size = self._sizes.pop(container_id, 0)
        return None if session is None else (session, size)

    async def sleep(self, container_id: str, session: sandbox.Session) -> bool:
        """True if the sandbox hibernated; else it is closed (memory lost, files kept in the store)."""
        if self.enabled and session.can_hibernate:
            try:
                size = await session.hibernate()
            except sandbox.SandboxError as exc:
                log.warning("hibernation failed; expiring", extra={"container_id": container_id, "error": str(exc)})
            else:
                self.adopt(container_id, session, size)
                return True
        await session.close()
        return False

    async def within_budget(self) -> None:
        """Drop the least recently used hibernations to files-only while checkpoints exceed the budget."""
        for _, container_id in sorted((s.last_active, cid) for cid, s in self._sessions.items()):
            if self.bytes <= self.budget:
                return
            taken = self.take(container_id)
            if taken is None:
                continue
            await taken[0].close()
            await self.store.update_container(container_id, status="expired", only_if="hibernated")
            log.info("hibernation dropped to files", extra={"container_id": container_id, "reason": "budget"})
