"""sandbox.testing: the real Session over FakeBackend runs, queues, interrupts and times out as documented."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from sandbox import Backend, Display, ExecutionError, KernelStartError, Outcome, Output, Session, Stream
from sandbox.testing import FakeBackend


async def echo(code: str) -> Sequence[Output]:
    if code == "raise":
        return (ExecutionError(name="ValueError", value="no", traceback=("ValueError: no",)),)
    return (Stream(name="stdout", text=code + "\n"), Display(data={"text/plain": "1"}, is_result=True))


@pytest.fixture
async def backend() -> AsyncIterator[FakeBackend]:
    fake = FakeBackend(echo)
    yield fake
    await fake.aclose()


async def test_it_is_a_backend_and_its_sessions_run_the_handler(backend: FakeBackend) -> None:
    assert isinstance(backend, Backend)
    session = await Session.start(backend, "s", files=[("in.csv", b"a\n")])
    result = await session.execute("hello")
    assert (result.outcome, result.stdout, result.displays[0].text) == (Outcome.OK, "hello\n", "1")
    assert (await session.execute("raise")).outcome is Outcome.ERROR
    assert backend.executed == [(session.host.name, "hello"), (session.host.name, "raise")]
    assert [f.path for f in await session.list_files()] == ["in.csv"]
    await session.close()
    assert backend.stopped == [session.host.name] and backend.running == {}


async def test_a_held_execution_can_be_stopped_or_time_out(backend: FakeBackend) -> None:
    session = await Session.start(backend, "s")
    backend.execute_gate.hold()
    stop = asyncio.Event()
    running = asyncio.create_task(session.execute("slow", stop=stop))
    await backend.execute_gate.arrived()
    stop.set()
    assert (await running).outcome is Outcome.CANCELLED
    assert backend.interrupted == [session.host.name]
    timed_out = await session.execute("slow", timeout=0.05)
    assert timed_out.outcome is Outcome.TIMEOUT and "timed out" in timed_out.logs
    backend.execute_gate.release()
    assert (await session.execute("after")).stdout == "after\n"


async def test_a_failing_start_raises_and_leaves_nothing_running(backend: FakeBackend) -> None:
    backend.start_gate.fail_with(KernelStartError("no kernel"))
    with pytest.raises(KernelStartError):
        await Session.start(backend, "s")
    assert backend.running == {} and len(backend.started) == 1
