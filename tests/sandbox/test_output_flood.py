"""Many small prints: every line arrives, in order, and the end never hangs on a lost message.

ZeroMQ's default high-water mark once dropped runs of flushed prints without a
word (1,722 of 20,000 lines), and a lost idle status hung the call until its
timeout. These tests count the lines.

Flushes that follow one another closely travel together (``_inside/launcher.py``):
the tests below also hold that to its promises: few messages, the order of
streams and displays kept, and a flushed line never held back.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from sandbox import Display, Limits, Notice, Outcome, Output, Stream

pytestmark = pytest.mark.docker

FLOOD = "for i in range({n}):\n    print(i, flush=True)"


def expected(n: int) -> str:
    return "".join(f"{i}\n" for i in range(n))


@pytest.mark.slow
@pytest.mark.parametrize("n", [20_000, 100_000])
async def test_every_flushed_line_arrives_in_order(make_session, n: int) -> None:
    session = await make_session(limits=Limits(max_stream_bytes=4 << 20))
    result = await session.execute(FLOOD.format(n=n), timeout=170)
    assert result.outcome is Outcome.OK, result.outputs[-3:]
    assert result.stdout == expected(n)
    assert not [o for o in result.outputs if isinstance(o, Notice)]


@pytest.mark.slow
async def test_a_flood_past_the_cap_keeps_a_whole_prefix_and_says_so(make_session) -> None:
    session = await make_session(limits=Limits(max_stream_bytes=50_000))
    result = await session.execute(FLOOD.format(n=30_000), timeout=170)
    assert result.outcome is Outcome.OK
    assert len(result.stdout.encode()) == 50_000
    assert expected(30_000).startswith(result.stdout)  # contiguous from the first line: nothing lost before the cap
    notices = [o.text for o in result.outputs if isinstance(o, Notice)]
    assert len(notices) == 1 and "output truncated" in notices[0], notices


async def test_the_session_works_normally_after_a_flood(make_session) -> None:
    session = await make_session()
    await session.execute(FLOOD.format(n=5_000))
    after = await session.execute("print('next')")
    assert after.outcome is Outcome.OK
    assert after.stdout == "next\n"


async def test_local_kernels_receive_every_line_too(make_session, local_backend) -> None:
    session = await make_session(backend=local_backend, limits=Limits(max_stream_bytes=4 << 20))
    result = await session.execute(FLOOD.format(n=20_000), timeout=170)
    assert result.stdout == expected(20_000)


async def test_a_loop_of_flushed_prints_travels_in_few_messages(make_session) -> None:
    # One message per flush made 200,000 prints cost a core for a minute in the kernel, and as
    # much again in every process that relays them; every other sandbox on the host stalled.
    session = await make_session(limits=Limits(max_stream_bytes=4 << 20))
    pieces: list[Output] = []
    result = await session.execute(FLOOD.format(n=20_000), timeout=170, on_output=pieces.append)
    assert result.stdout == expected(20_000)
    streams = [p for p in pieces if isinstance(p, Stream)]
    assert len(streams) <= 2_000, f"{len(streams)} stream messages for 20,000 flushed prints"


async def test_flushed_output_keeps_its_order_across_streams_and_displays(make_session) -> None:
    session = await make_session()
    code = (
        "import sys\n"
        "from IPython.display import display, HTML\n"
        "for i in range(5000):\n"
        "    print(f'o{i}', flush=True)\n"
        "    print(f'e{i}', file=sys.stderr, flush=True)\n"
        "    if i % 50 == 0:\n"
        "        display(HTML(f'<b>{i}</b>'))\n"
    )
    pieces: list[Output] = []
    result = await session.execute(code, timeout=170, on_output=pieces.append)
    assert result.outcome is Outcome.OK
    seen: list[str] = []
    for piece in pieces:
        if isinstance(piece, Stream):
            seen += [f"{piece.name}:{word}" for word in piece.text.split()]
        elif isinstance(piece, Display):
            seen.append(f"display:{piece.data['text/html']}")
    wanted: list[str] = []
    for i in range(5000):
        wanted += [f"stdout:o{i}", f"stderr:e{i}"] + ([f"display:<b>{i}</b>"] if i % 50 == 0 else [])
    assert seen == wanted


async def test_the_last_of_a_run_of_flushed_prints_is_not_held_back(make_session) -> None:
    # A flush that travels with the next one must still leave when no next one comes.
    session = await make_session()
    text: list[str] = []
    arrived = asyncio.Event()

    def sink(piece: Output) -> None:
        if isinstance(piece, Stream):
            text.append(piece.text)
            if "".join(text).endswith("999\n"):
                arrived.set()

    code = "for i in range(1000):\n    print(i, flush=True)\nimport time\ntime.sleep(120)"
    task = asyncio.create_task(session.execute(code, timeout=170, on_output=sink))
    try:
        await asyncio.wait_for(arrived.wait(), 60)
        assert not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert "".join(text) == expected(1000)
