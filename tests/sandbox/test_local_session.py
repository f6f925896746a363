"""LocalBackend: a plain ipykernel subprocess. No isolation, no Docker."""

from __future__ import annotations

from sandbox import Outcome


async def test_state_persists_between_executions(make_session, local_backend):
    session = await make_session(backend=local_backend)
    first = await session.execute("x = 41")
    assert first.outcome is Outcome.OK
    second = await session.execute("print(x + 1)")
    assert second.outcome is Outcome.OK
    assert second.stdout == "42\n"


async def test_mnt_data_in_code_is_the_session_data_dir(make_session, local_backend):
    session = await make_session(backend=local_backend)
    await session.write_file("x.txt", b"hello from the host")
    result = await session.execute(
        "print(open('/mnt/data/x.txt').read())\nopen('/mnt/data/y.txt', 'w').write('from code')"
    )
    assert result.outcome is Outcome.OK, result.logs
    assert result.stdout == "hello from the host\n"
    assert [f.path for f in result.files] == ["y.txt"]
    assert await session.read_file("y.txt") == b"from code"


async def test_a_failing_output_sink_does_not_break_the_session(make_session, local_backend) -> None:
    session = await make_session(backend=local_backend)

    def sink(_output: object) -> None:
        raise RuntimeError("the caller's sink is broken")

    await session.execute("print('to a broken sink')", on_output=sink)
    after = await session.execute("print('next')")
    assert after.stdout == "next\n"
    assert not after.kernel_restarted
