"""Which containers' sandboxes are in use now, and the deletes that interrupt those uses and wait.

A call or file operation holds a lease while it uses a sandbox, so that expiry and
eviction only take idle ones. A delete marks the container first (no new lease
from then on), interrupts the calls running in it, and waits for the last lease
to end before the sandbox goes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

__all__ = ["Leases"]

log = logging.getLogger("codeinterp.gateway")


class Leases:
    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self.deleting: set[str] = set()  # no new lease, no expiry: a delete is interrupting and removing it
        self._on_delete: dict[str, set[Callable[[], None]]] = {}  # interrupts of the calls running in each
        self._unleased: dict[str, asyncio.Event] = {}  # set when the last lease ends, for a waiting delete

    def held(self, container_id: str) -> bool:
        return bool(self._counts.get(container_id))

    def take(self, container_id: str) -> None:
        self._counts[container_id] = self._counts.get(container_id, 0) + 1

    def release(self, container_id: str) -> None:
        count = self._counts.get(container_id, 0) - 1
        if count > 0:
            self._counts[container_id] = count
        else:
            self._counts.pop(container_id, None)
            if (unleased := self._unleased.pop(container_id, None)) is not None:
                unleased.set()

    def on_delete(self, container_id: str, interrupt: Callable[[], None]) -> Callable[[], None]:
        """Call ``interrupt`` if the container is deleted (at once if it is being deleted); returns the undo."""
        callbacks = self._on_delete.setdefault(container_id, set())
        callbacks.add(interrupt)
        if container_id in self.deleting:
            interrupt()

        def undo() -> None:
            callbacks.discard(interrupt)
            if not callbacks and self._on_delete.get(container_id) is callbacks:
                del self._on_delete[container_id]
        return undo

    async def interrupt_and_wait(self, container_id: str, timeout: float) -> None:
        """Interrupt every call in the container, then wait (at most ``timeout``) for its last lease to end."""
        for interrupt in list(self._on_delete.get(container_id, ())):
            interrupt()
        if self.held(container_id):
            unleased = self._unleased.setdefault(container_id, asyncio.Event())
            try:
                await asyncio.wait_for(unleased.wait(), timeout)
            except TimeoutError:
                log.warning("removing a container still in use", extra={"container_id": container_id})

    def deleted(self, container_id: str) -> None:
        """The delete is over: forget it."""
        self.deleting.discard(container_id)
        self._unleased.pop(container_id, None)
