"""Revival: an idle container's sandbox brought back for a call, woken or restored.

A hibernated sandbox wakes with its whole memory (every variable intact). When it
cannot (no checkpoint here, or the wake fails), a new sandbox gets the files that
were kept in the store when it went idle. Either way the caller learns which, as a
``Restored``, and tells the user.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import sandbox

from .files import FileService
from .hibernations import Hibernations
from .records import ContainerRecord
from .slots import Slots
from .store import Store
from .transfer import restore_files

__all__ = ["Restored", "revive"]

log = logging.getLogger("codeinterp.gateway")


@dataclass(frozen=True)
class Restored:
    """How a sandbox that had gone idle came back for a call."""

    kind: str  # "memory": woken from hibernation, variables intact; "files": a new kernel, files put back
    reason: str | None = None  # why waking failed, when files were restored instead


async def revive(record: ContainerRecord, *, wake: bool, store: Store, files: FileService, slots: Slots,
                 hibernations: Hibernations) -> tuple[sandbox.Session, Restored]:
    """The record's sandbox running again, and how it came back.

    ``wake``: the record was hibernated here when the caller claimed it for this node. When no
    sandbox can be had, the record is marked expired (a hibernated one that found no room sleeps
    on, wakeable later) and the error propagates.
    """
    reason = None
    asleep = hibernations.take(record.id) if wake else None
    if asleep is not None:
        session, size = asleep
        try:
            await slots.reserve()
        except BaseException:
            hibernations.adopt(record.id, session, size)  # no room now: it sleeps on, wakeable later
            await store.update_container(record.id, status="hibernated", only_if="running")
            raise
        try:
            await session.wake()
        except sandbox.SandboxError as exc:
            # Its files were kept in the store when it hibernated: restore those instead.
            reason = str(exc)
            log.warning("wake failed; restoring files", extra={"container_id": record.id, "error": reason})
            await slots.abandon(session)
        except BaseException:
            await slots.abandon(session)
            await store.update_container(record.id, status="expired", only_if="running")
            raise
        else:
            return session, Restored("memory")
    try:
        session = await slots.start(record.id, record.memory_limit)
    except BaseException:
        await store.update_container(record.id, status="expired", only_if="running")
        raise
    try:
        await restore_files(store, files, record, session)
    except BaseException:
        await slots.abandon(session)
        await store.update_container(record.id, status="expired", only_if="running")
        raise
    return session, Restored("files", reason)
