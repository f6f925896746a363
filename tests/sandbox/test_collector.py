"""Collector: one execution's iopub messages turned into capped, ordered outputs."""

from __future__ import annotations

from typing import Any

from sandbox import Display, ExecutionError, ExecutionResult, Limits, Notice, Outcome, Output, Stream
from sandbox._channel import Message
from sandbox._kernel import Collector


def msg(msg_type: str, **content: Any) -> Message:
    return Message(channel="iopub", msg_type=msg_type, parent_id="m1", content=content)


def notices(collector: Collector) -> list[Notice]:
    return [o for o in collector.outputs if isinstance(o, Notice)]


# -- streams ----------------------------------------------------------------------------


def test_adjacent_streams_of_one_name_merge():
    collector = Collector(Limits())
    for name, text in [("stdout", "a"), ("stdout", "b"), ("stderr", "c"), ("stderr", "d"), ("stdout", "e")]:
        collector.stream(name, text)
    assert collector.outputs == [Stream("stdout", "ab"), Stream("stderr", "cd"), Stream("stdout", "e")]


def test_sink_sees_every_piece_as_it_arrives():
    seen: list[Output] = []
    collector = Collector(Limits(), sink=seen.append)
    collector.stream("stdout", "a")
    collector.stream("stdout", "b")
    assert seen == [Stream("stdout", "a"), Stream("stdout", "b")]
    assert collector.outputs == [Stream("stdout", "ab")]


def test_stream_past_the_cap_is_truncated_with_one_notice():
    collector = Collector(Limits(max_stream_bytes=10))
    collector.stream("stdout", "abcdef")
    collector.stream("stdout", "ghijkl")
    collector.stream("stderr", "mnop")
    collector.stream("stdout", "qrst")
    assert collector.outputs[0] == Stream("stdout", "abcdefghij")
    assert len(collector.outputs) == 2
    assert len(notices(collector)) == 1
    assert "truncated" in notices(collector)[0].text
    assert collector.dropped_stream == 2 + 4 + 4


def test_stream_truncation_never_splits_a_character():
    collector = Collector(Limits(max_stream_bytes=5))
    collector.stream("stdout", "ééé")  # 6 bytes in UTF-8
    assert collector.outputs[0] == Stream("stdout", "éé")
    assert len(notices(collector)) == 1


def test_unknown_stream_name_is_stdout():
    collector = Collector(Limits())
    collector.stream("weird", "x")
    assert collector.outputs == [Stream("stdout", "x")]


# -- displays ----------------------------------------------------------------------------------


def test_bundle_over_the_cap_is_dropped_with_a_notice():
    collector = Collector(Limits(max_bundle_bytes=100))
    collector.display({"text/plain": "x" * 101}, {}, False)
    collector.display({"text/plain": "small"}, {}, False)
    assert len(collector.outputs) == 2
    assert isinstance(collector.outputs[0], Notice)
    assert "dropped" in collector.outputs[0].text
    assert collector.outputs[1] == Display(data={"text/plain": "small"})


def test_displays_past_the_count_cap_are_dropped_with_one_notice():
    collector = Collector(Limits(max_displays=2))
    for n in range(5):
        collector.display({"text/plain": str(n)}, {}, False)
    displays = [o for o in collector.outputs if isinstance(o, Display)]
    assert [d.text for d in displays] == ["0", "1"]
    assert len(notices(collector)) == 1


def test_displays_past_the_total_byte_cap_are_dropped():
    collector = Collector(Limits(max_display_bytes=10, max_bundle_bytes=10))
    collector.display({"text/plain": "123456"}, {}, False)
    collector.display({"text/plain": "123456"}, {}, False)
    displays = [o for o in collector.outputs if isinstance(o, Display)]
    assert [d.text for d in displays] == ["123456"]
    assert len(notices(collector)) == 1


# -- messages -----------------------------------------------------------------------------------


def test_handle_reports_idle_and_records_execution_count():
    collector = Collector(Limits())
    assert collector.handle(msg("status", execution_state="busy")) is False
    assert collector.handle(msg("execute_input", code="1", execution_count=7)) is False
    assert collector.handle(msg("status", execution_state="idle")) is True
    assert collector.execution_count == 7
    assert collector.outputs == []


def test_handle_maps_message_types_to_outputs():
    collector = Collector(Limits())
    collector.handle(msg("stream", name="stderr", text="warn\n"))
    collector.handle(msg("execute_result", data={"text/plain": "3"}, metadata={}, execution_count=1))
    collector.handle(msg("display_data", data={"text/html": "<b>x</b>"}, metadata={"m": 1}))
    collector.handle(msg("error", ename="KeyError", evalue="'k'", traceback=["tb1", "tb2"]))
    assert collector.outputs == [
        Stream("stderr", "warn\n"),
        Display(data={"text/plain": "3"}, is_result=True),
        Display(data={"text/html": "<b>x</b>"}, metadata={"m": 1}),
        ExecutionError(name="KeyError", value="'k'", traceback=("tb1", "tb2")),
    ]


# -- logs -----------------------------------------------------------------------------------------


def test_logs_are_streams_result_text_traceback_and_notices_in_order():
    collector = Collector(Limits())
    collector.handle(msg("stream", name="stdout", text="hello"))
    collector.handle(msg("execute_result", data={"text/plain": "42"}, metadata={}, execution_count=1))
    collector.handle(msg("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"},
                         metadata={}))
    collector.handle(msg("stream", name="stderr", text="careful\n"))
    collector.handle(msg("error", ename="ValueError", evalue="bad",
                         traceback=["\x1b[31mTraceback\x1b[39m", "\x1b[31mValueError\x1b[39m: bad"]))
    collector.notice("a notice")
    result = ExecutionResult(outcome=Outcome.ERROR, outputs=tuple(collector.outputs))
    assert result.logs == "hello\n42\ncareful\nTraceback\nValueError: bad\na notice\n"


def test_error_text_without_traceback_is_name_and_value():
    assert ExecutionError(name="KeyError", value="'k'").text == "KeyError: 'k'"


def test_the_kernel_setup_code_compiles():
    # It runs silently in every new kernel, where a syntax error would pass unnoticed.
    from sandbox._kernel import _KERNEL_SETUP

    compile(_KERNEL_SETUP, "<codeinterp setup>", "exec")


def test_many_small_pieces_join_into_one_stream_in_order() -> None:
    collector = Collector(Limits(max_stream_bytes=10 << 20))
    for i in range(100_000):
        collector.stream("stdout", f"{i}\n")
    assert collector.outputs == [Stream("stdout", "".join(f"{i}\n" for i in range(100_000)))]
