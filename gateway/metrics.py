"""Prometheus metrics, in a registry of the app's own (nothing global, nothing at import time)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]


class Metrics:
    def __init__(self, sessions: Callable[[], float], storage_bytes: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("codeinterp_requests_total", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("codeinterp_request_seconds", "HTTP request duration", ["route"],
                                 registry=self.registry)
        Gauge("codeinterp_sessions", "Live sandbox sessions", registry=self.registry).set_function(sessions)
        Gauge("codeinterp_storage_bytes", "Bytes in the file store",
              registry=self.registry).set_function(storage_bytes)

    def render(self) -> bytes:
        return generate_latest(self.registry)
