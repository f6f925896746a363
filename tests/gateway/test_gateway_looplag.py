"""The gateway's event-loop lag metric: a callback that holds the loop shows as a late wake-up."""

from __future__ import annotations

import asyncio
import contextlib
import time

from gateway.metrics import LOOP_LAG_EVERY, Metrics


def _sample(metrics: Metrics, suffix: str, labels: dict[str, str] | None = None) -> float:
    value = metrics.registry.get_sample_value(f"codeinterp_event_loop_lag_seconds{suffix}", labels or {})
    assert value is not None
    return value


async def test_a_held_loop_is_counted_late_by_about_as_long_as_it_was_held() -> None:
    metrics = Metrics(sessions=lambda: 0, storage_bytes=lambda: 0)
    watcher = asyncio.create_task(metrics.watch_loop())
    try:
        await asyncio.sleep(LOOP_LAG_EVERY * 3)
        time.sleep(0.3)  # what a blocking call on the loop does to every request
        await asyncio.sleep(LOOP_LAG_EVERY * 3)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    count = _sample(metrics, "_count")
    assert count >= 4
    late = count - _sample(metrics, "_bucket", {"le": "0.1"})
    assert late >= 1, "the 0.3 s hold was not seen"
    assert _sample(metrics, "_sum") >= 0.2
    assert b"codeinterp_event_loop_lag_seconds_bucket" in metrics.render()
