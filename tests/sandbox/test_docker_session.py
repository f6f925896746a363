"""Sessions against the real Docker engine, the real kernel image and real jupyter_client."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import time

import pytest

from sandbox import (
    Display,
    FileError,
    FileNotFound,
    Limits,
    Notice,
    Outcome,
    Session,
    SessionClosed,
    UnsafeFile,
)
from tests.runtime_support import UNDER_GVISOR

pytestmark = pytest.mark.docker

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_displays(result) -> list[bytes]:
    return [base64.b64decode(d.data["image/png"]) for d in result.displays if "image/png" in d.data]


# -- execution -------------------------------------------------------------------


async def test_state_persists_between_executions(make_session):
    session = await make_session()
    first = await session.execute("x = 41")
    assert first.outcome is Outcome.OK
    second = await session.execute("x + 1")
    assert second.outcome is Outcome.OK
    assert second.displays[0].text == "42"


async def test_stdout_and_stderr_are_captured_separately(make_session):
    session = await make_session()
    result = await session.execute("import sys\nprint('to out')\nprint('to err', file=sys.stderr)")
    assert result.outcome is Outcome.OK
    assert result.stdout == "to out\n"
    assert result.stderr == "to err\n"


async def test_cell_value_is_an_execute_result(make_session):
    session = await make_session()
    result = await session.execute("6 * 7")
    assert result.outcome is Outcome.OK
    assert len(result.displays) == 1
    value = result.displays[0]
    assert value.is_result
    assert value.data["text/plain"] == "42"
    assert result.logs == "42\n"


async def test_exception_is_data_with_name_value_and_clean_traceback(make_session):
    session = await make_session()
    result = await session.execute("def f():\n    raise ValueError('bad thing')\nf()")
    assert result.outcome is Outcome.ERROR
    error = result.error
    assert error is not None
    assert error.name == "ValueError"
    assert error.value == "bad thing"
    assert len(error.traceback) >= 2
    assert "\x1b" not in error.text
    assert "ValueError: bad thing" in error.text
    assert "ValueError: bad thing" in result.logs


# -- plots ----------------------------------------------------------------------------


@pytest.mark.parametrize("code", [
    "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [3, 1, 2])\nplt.show()",
    # A figure left open at the end of a cell is displayed too.
    "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\n_ = ax.bar(['a', 'b'], [1, 2])",
], ids=["shown", "left-open"])
async def test_plot_is_a_png_display(make_session, code):
    session = await make_session()
    result = await session.execute(code)
    assert result.outcome is Outcome.OK
    pngs = png_displays(result)
    assert len(pngs) == 1
    assert pngs[0].startswith(PNG_SIGNATURE)


# -- files ------------------------------------------------------------------------------


async def test_uploaded_file_is_readable_by_pandas(make_session):
    session = await make_session()
    info = await session.write_file("sales.csv", b"region,amount\nnorth,10\nsouth,32\n")
    assert info.path == "sales.csv"
    result = await session.execute(
        "import pandas as pd\ndf = pd.read_csv('/mnt/data/sales.csv')\nprint(df['amount'].sum(), len(df))"
    )
    assert result.outcome is Outcome.OK, result.logs
    assert result.stdout == "42 2\n"


async def test_file_made_by_code_is_reported_and_readable(make_session):
    session = await make_session()
    payload = bytes(range(256)) * 40
    result = await session.execute(
        "with open('/mnt/data/out.bin', 'wb') as f:\n    f.write(bytes(range(256)) * 40)"
    )
    assert result.outcome is Outcome.OK, result.logs
    assert [f.path for f in result.files] == ["out.bin"]
    info = result.files[0]
    assert info.size == len(payload)
    assert info.sha256 == hashlib.sha256(payload).hexdigest()
    assert await session.read_file("out.bin") == payload


async def test_files_placed_between_executions_are_not_reported_but_files_the_code_made_are(make_session):
    session = await make_session()
    await session.execute("import threading, time")
    await session.write_file("upload.csv", b"from the user")
    made = await session.execute("threading.Timer(0.3, lambda: open('/mnt/data/late.txt', 'w').write('late'))"
                                 ".start()")
    assert made.files == ()
    deadline = time.monotonic() + 10
    while "late.txt" not in [f.path for f in await session.list_files()]:  # lands between two executions
        assert time.monotonic() < deadline, "the timer never wrote late.txt"
        await asyncio.sleep(0.05)

    following = await session.execute("pass")

    assert [f.path for f in following.files] == ["late.txt"], "the code's file is reported, the upload is not"
    assert (await session.execute("pass")).files == ()


async def test_write_file_name_clash_gets_numbered_suffix(make_session):
    session = await make_session()
    first = await session.write_file("a.csv", b"first")
    second = await session.write_file("a.csv", b"second")
    assert first.path == "a.csv"
    assert second.path == "a-1.csv"
    assert await session.read_file("a.csv") == b"first"
    assert await session.read_file("a-1.csv") == b"second"
    assert sorted(f.path for f in await session.list_files()) == ["a-1.csv", "a.csv"]


async def test_symlink_made_by_code_is_never_served(make_session):
    session = await make_session()
    result = await session.execute(
        "import os\nos.symlink('/etc/passwd', '/mnt/data/x')\n"
        "open('/mnt/data/real.txt', 'w').write('real')"
    )
    assert result.outcome is Outcome.OK, result.logs
    assert [f.path for f in result.files] == ["real.txt"]
    with pytest.raises(UnsafeFile):
        await session.read_file("x")
    assert [f.path for f in await session.list_files()] == ["real.txt"]


async def test_fifo_made_by_code_does_not_hang_reads_or_listing(make_session):
    session = await make_session()
    result = await session.execute("import os\nos.mkfifo('/mnt/data/pipe')")
    assert result.outcome is Outcome.OK, result.logs
    assert result.files == ()
    # Under gVisor the FIFO exists only in gVisor's own view of /mnt/data: the host sees no file at all.
    with pytest.raises(FileNotFound if UNDER_GVISOR else UnsafeFile):
        await asyncio.wait_for(session.read_file("pipe"), 10)
    assert await asyncio.wait_for(session.list_files(), 10) == []


async def test_read_of_missing_file_is_a_file_error(make_session):
    session = await make_session()
    with pytest.raises(FileError):
        await session.read_file("nope.txt")


# -- failures and recovery ---------------------------------------------------------------


@pytest.mark.slow
async def test_timeout_interrupts_and_keeps_variables(make_session):
    session = await make_session()
    await session.execute("kept = 'still here'")
    started = time.monotonic()
    result = await session.execute("while True: pass", timeout=2)
    elapsed = time.monotonic() - started
    assert result.outcome is Outcome.TIMEOUT
    assert elapsed < 15
    assert "timed out after 2 s" in result.logs
    assert not result.kernel_restarted
    after = await session.execute("print(kept)")
    assert after.outcome is Outcome.OK
    assert after.stdout == "still here\n"


@pytest.mark.slow
async def test_timeout_that_ignores_interrupt_restarts_kernel(make_session):
    session = await make_session(limits=Limits(interrupt_grace=1.0))
    await session.execute("lost = 1\nopen('/mnt/data/keep.txt', 'w').write('kept')")
    started = time.monotonic()
    result = await session.execute(
        "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: pass", timeout=2
    )
    assert time.monotonic() - started < 20
    assert result.outcome is Outcome.TIMEOUT
    assert result.kernel_restarted
    assert "kernel was restarted" in result.logs
    after = await session.execute("print('lost' in globals(), open('/mnt/data/keep.txt').read())")
    assert after.stdout == "False kept\n"


@pytest.mark.slow
async def test_kernel_death_restarts_kernel_and_keeps_files(make_session):
    session = await make_session()
    await session.execute("open('/mnt/data/keep.txt', 'w').write('kept')\nlost = 1")
    result = await session.execute("import os\nos._exit(1)")
    assert result.outcome is Outcome.KERNEL_DIED
    assert result.kernel_restarted
    assert result.exit is not None and result.exit.exit_code == 1
    assert "restarted" in result.logs
    after = await session.execute("print(open('/mnt/data/keep.txt').read())\n'lost' in globals()")
    assert after.outcome is Outcome.OK
    assert after.stdout == "kept\n"
    assert after.displays[0].text == "False"
    assert await session.read_file("keep.txt") == b"kept"


@pytest.mark.slow
async def test_memory_past_the_limit_is_out_of_memory(make_session):
    session = await make_session(limits=Limits(memory="256m"))
    result = await session.execute("x = [b'x' * 10**7 for _ in range(1000)]")
    assert result.outcome is Outcome.OUT_OF_MEMORY
    assert result.kernel_restarted
    assert result.exit is not None and result.exit.oom_killed
    assert "out of memory" in result.logs
    after = await session.execute("print('alive')")
    assert after.stdout == "alive\n"


@pytest.mark.slow
async def test_cancelled_execution_leaves_session_usable(make_session):
    session = await make_session()
    await session.execute("kept = 5")
    started = asyncio.Event()
    task = asyncio.create_task(session.execute("import time\nprint('started', flush=True)\ntime.sleep(30)",
                                               on_output=lambda _: started.set()))
    await asyncio.wait_for(started.wait(), 60)  # running: the cancel interrupts code, not a request unsent
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    began = time.monotonic()
    result = await session.execute("print('ok')\nkept")
    assert time.monotonic() - began < 10
    assert result.outcome is Outcome.OK
    assert result.stdout == "ok\n"
    assert result.displays[0].text == "5"


# -- isolation ------------------------------------------------------------------------------


async def test_no_outbound_connection(make_session):
    session = await make_session()
    result = await session.execute(
        "import socket\ns = socket.socket()\ns.settimeout(5)\n"
        "try:\n    s.connect(('1.1.1.1', 53))\n    print('connected')\n"
        "except OSError as exc:\n    print('refused', type(exc).__name__)"
    )
    assert result.outcome is Outcome.OK, result.logs
    assert result.stdout.startswith("refused ")


async def test_no_name_resolution(make_session):
    session = await make_session()
    result = await session.execute(
        "import socket\ntry:\n    print(socket.gethostbyname('example.com'))\n"
        "except OSError as exc:\n    print('failed', type(exc).__name__)"
    )
    assert result.outcome is Outcome.OK, result.logs
    assert result.stdout.startswith("failed ")


async def test_only_loopback_interface(make_session):
    session = await make_session()
    result = await session.execute("import os\nprint(sorted(os.listdir('/sys/class/net')))")
    assert result.stdout == "['lo']\n"


async def test_kernel_runs_as_uid_1000(make_session):
    session = await make_session()
    result = await session.execute("import os\nprint(os.getuid(), os.geteuid(), os.getgid())")
    assert result.stdout == "1000 1000 1000\n"


async def test_host_environment_does_not_reach_kernel(make_session, monkeypatch):
    monkeypatch.setenv("CODEINTERP_SECRET_TEST", "hunter2-secret")
    session = await make_session()
    result = await session.execute(
        "import os\nprint('CODEINTERP_SECRET_TEST' in os.environ)\n"
        "print(any('hunter2-secret' in v for v in os.environ.values()))\nprint(os.environ['HOME'])"
    )
    assert result.stdout == "False\nFalse\n/home/sandbox\n"


# -- caps -------------------------------------------------------------------------------------


async def test_stream_flood_is_capped_with_a_notice(make_session):
    session = await make_session(limits=Limits(max_stream_bytes=100_000))
    result = await session.execute("print('x' * 3_000_000)")
    assert result.outcome is Outcome.OK
    kept = len(result.stdout.encode())
    assert 0 < kept <= 100_000
    notices = [o for o in result.outputs if isinstance(o, Notice)]
    assert len(notices) == 1
    assert "truncated" in notices[0].text
    assert not any(isinstance(o, Display) for o in result.outputs)


@pytest.mark.slow
async def test_execution_cancelled_while_queued_never_runs(make_session):
    session = await make_session()
    started = asyncio.Event()
    # It runs until the test writes /mnt/data/go: the queued one is cancelled while this one surely runs.
    running = asyncio.create_task(session.execute(
        "import os, time\nprint('started', flush=True)\n"
        "while not os.path.exists('/mnt/data/go'): time.sleep(0.05)\nfirst_done = True",
        on_output=lambda _: started.set()))
    await asyncio.wait_for(started.wait(), 60)
    queued = asyncio.create_task(session.execute("queued_ran = True"))
    await asyncio.sleep(0)  # it has asked for its turn
    assert session.busy and not queued.done()
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    await session.write_file("go", b"")
    first = await running
    assert first.outcome is Outcome.OK
    check = await session.execute("print('first_done' in globals(), 'queued_ran' in globals())")
    assert check.stdout == "True False\n"


async def test_a_queued_execution_stopped_ends_before_the_one_ahead_of_it(make_session):
    session = await make_session()
    started = asyncio.Event()
    running = asyncio.create_task(session.execute(
        "import os, time\nprint('started', flush=True)\n"
        "while not os.path.exists('/mnt/data/go'): time.sleep(0.05)",
        on_output=lambda _: started.set()))
    await asyncio.wait_for(started.wait(), 60)
    stop = asyncio.Event()
    queued = asyncio.create_task(session.execute("queued_ran = True", stop=stop))
    await asyncio.sleep(0)
    stop.set()
    result = await asyncio.wait_for(queued, 30)  # the one ahead still runs: it waits for /mnt/data/go
    assert result.outcome is Outcome.CANCELLED
    assert not running.done()
    await session.write_file("go", b"")
    assert (await running).outcome is Outcome.OK
    check = await session.execute("print('queued_ran' in globals())")
    assert check.stdout == "False\n"


async def test_closed_session_refuses_work(make_session):
    session = await make_session()
    await session.close()
    assert session.closed
    with pytest.raises(SessionClosed):
        await session.execute("1")
    with pytest.raises(SessionClosed):
        await session.list_files()


@pytest.mark.parametrize("delay", [0.01, 0.1, 0.3])
async def test_a_start_cancelled_midway_leaves_no_container(docker_backend, run_id, delay, tmp_path):
    import docker

    from sandbox import DockerBackend

    session_id = f"cancelled-start-{delay}"
    # A work root of its own: the shared one sees other runs' sandboxes come and go.
    work_root = tmp_path / "w"
    backend = DockerBackend(dataclasses.replace(docker_backend.config, work_root=work_root))
    dirs_before: set[object] = set()
    starting = asyncio.ensure_future(Session.start(backend, session_id))
    await asyncio.sleep(delay)
    starting.cancel()
    try:
        session = await starting
    except asyncio.CancelledError:
        pass
    else:
        await session.close()  # it won the race: finished before the cancel
    client = docker.from_env()
    try:
        left = client.containers.list(all=True, filters={"label": [f"codeinterp.test-run={run_id}",
                                                                   f"codeinterp.session={session_id}"]})
    finally:
        client.close()
    await backend.aclose()
    assert left == []
    assert not work_root.exists() or set(work_root.iterdir()) - dirs_before == set(), "its data dir is gone"
