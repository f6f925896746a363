"""The warm pool: sandboxes started ahead of demand, each handed out once and never reused."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import sandbox

__all__ = ["WarmPool"]

log = logging.getLogger("codeinterp.gateway")


class WarmPool:
    """Keeps ``size`` sandboxes with a ready kernel for the default image and memory limit.

    Refilling starts one sandbox at a time with a pause between starts, so that
    on a small machine it cannot starve the calls that are running.
    """

    def __init__(self, start: Callable[[], Awaitable[sandbox.Session]], size: int, *, pause: float,
                 may_start: Callable[[], bool]) -> None:
        self._start, self.size, self.pause, self._may_start = start, size, pause, may_start
        self._ready: list[sandbox.Session] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.starting = 0

    @property
    def ready(self) -> int:
        return len(self._ready)

    def run(self) -> None:
        if self.size > 0 and self._task is None:
            self._task = asyncio.create_task(self._fill(), name="warm-pool")

    def take(self) -> sandbox.Session | None:
        """A ready sandbox, or None; taking one wakes the refill."""
        while self._ready:
            session = self._ready.pop(0)
            self._wake.set()  # refill
            if not session.closed:
                return session
        self._wake.set()
        return None

    async def _fill(self) -> None:
        # Never cancelled mid-start (a cancelled start could leave a container behind): close()
        # sets _closing and wakes the loop, which ends after the start under way.
        while not self._closing:
            if len(self._ready) < self.size and self._may_start():
                self.starting += 1
                try:
                    self._ready.append(await self._start())
                except Exception:  # the refill must outlive any one failed start
                    log.exception("warm pool start failed")
                    await self._idle(5)  # the engine or image is unwell: do not spin
                finally:
                    self.starting -= 1
                await self._idle(self.pause)
                continue
            await self._idle(5)  # then look again: capacity may have freed up

    async def _idle(self, seconds: float) -> None:
        self._wake.clear()
        if self._closing:
            return
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        except TimeoutError:
            pass

    async def release_one(self) -> bool:
        """Give back one pooled sandbox's slot (capacity needs it more). True if one was released."""
        if not self._ready:
            return False
        await self._ready.pop().close()
        return True

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(Exception):  # a failure here must not stop the shutdown's saving
                await self._task
            self._task = None
        while self._ready:
            await self._ready.pop().close()
