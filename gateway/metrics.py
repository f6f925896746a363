"""Prometheus metrics, in a registry of the app's own (nothing global, nothing at import time)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["LOOP_LAG_EVERY", "Metrics"]

LOOP_LAG_EVERY = 0.05  # seconds between the event loop's wake-ups that time its lag


class Metrics:
    def __init__(self, sessions: Callable[[], float], storage_bytes: Callable[[], float],
                 hibernated: Callable[[], float] = lambda: 0, checkpoint_bytes: Callable[[], float] = lambda: 0,
                 ) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("codeinterp_requests_total", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("codeinterp_request_seconds", "HTTP request duration", ["route"],
                                 registry=self.registry)
        Gauge("codeinterp_sessions", "Live sandbox sessions", registry=self.registry).set_function(sessions)
        Gauge("codeinterp_storage_bytes", "Bytes in the file store",
              registry=self.registry).set_function(storage_bytes)
        Gauge("codeinterp_hibernated", "Hibernated sandboxes: memory in a checkpoint on disk, no RAM",
              registry=self.registry).set_function(hibernated)
        Gauge("codeinterp_checkpoint_bytes", "Disk used by hibernated sandboxes' checkpoints",
              registry=self.registry).set_function(checkpoint_bytes)
        self.restores = Histogram("codeinterp_restore_seconds", "Bringing an idle sandbox back for a call",
                                  ["restored"], registry=self.registry,
                                  buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32))
        # Every request and every call's output goes through one event loop: a callback that holds it
        # stalls them all. This says how often, and how long, apart from what the machine does.
        self.loop_lag = Histogram("codeinterp_event_loop_lag_seconds",
                                  f"How late a wake-up due every {LOOP_LAG_EVERY} s came", registry=self.registry,
                                  buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))

    async def watch_loop(self) -> None:
        """Time the running loop's lag until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + LOOP_LAG_EVERY
            await asyncio.sleep(LOOP_LAG_EVERY)
            self.loop_lag.observe(max(0.0, loop.time() - due))

    def observe_restore(self, kind: str, seconds: float) -> None:
        """One sandbox brought back: ``kind`` "memory" (woken) or "files" (a new kernel)."""
        self.restores.labels(restored=kind).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
