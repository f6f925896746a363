"""bench/RESULTS.md is generated from bench/results.json: its prose reads every figure from the rows."""

from __future__ import annotations

from pathlib import Path

from bench import report
from bench.stats import Row

WARM = "first call on a new thread, `print(1)`, warm pool (size 2), HTTP"
COLD = "first call on a new thread, `print(1)`, cold (pool size 0), HTTP"
TRIP = "call round trip of `pass` on a warm thread, HTTP"
LIB_TRIP = "sandbox library: Session.execute(`pass`) on a warm session, no HTTP"
IMPORTS = "call of `import pandas, matplotlib` in a new sandbox (after `print(1)`), HTTP"
MEMORY = "idle memory per sandbox after `print(1)` (docker stats: usage - inactive file)"


def results(runsc: bool) -> report.Results:
    rows = [Row("1", WARM, [0.027, 0.029, 0.031]), Row("1", COLD, [0.6, 0.64, 0.7]),
            Row("2", TRIP, [0.0135]), Row("2", LIB_TRIP, [0.0045]),
            Row("4", MEMORY, [36.5 * (1 << 20)], unit="MiB", scale=1 / (1 << 20)),
            Row("7", IMPORTS, [0.7])]
    if runsc:
        rows += [Row("1", WARM, [0.05], runtime="runsc"), Row("1", COLD, [1.5], runtime="runsc"),
                 Row("2", TRIP, [0.02], runtime="runsc"), Row("7", IMPORTS, [2.1], runtime="runsc"),
                 Row("4", MEMORY, [73 * (1 << 20)], unit="MiB", scale=1 / (1 << 20), runtime="runsc")]
    else:
        rows += [Row(s, key, runtime="runsc", note="FAILED: runsc cannot run a sandbox here: KernelStartError")
                 for s, key in (("1", "warm"), ("1", "cold"), ("2", "roundtrip"), ("4", "memory"), ("7", "imports"))]
    return report.Results(machine=["- machine: test"], rows=rows)


def test_the_prose_quotes_the_table_s_medians() -> None:
    text = report.render(results(runsc=True))
    assert "from 640.0 ms (cold) to 29.0 ms over HTTP, within the 100 ms target." in text
    assert "HTTP adds 9.0 ms to a `pass` round trip over the library's 4.5 ms:" in text
    assert "warm median ≤ 100 ms: met (29.0 ms here)" in text
    assert "a cold first call takes 1.5 s against 640.0 ms under runc (2.34x)" in text
    assert "`import pandas, matplotlib` 2.1 s against 700.0 ms under runc (3.00x)" in text
    assert "an idle sandbox uses 73.0 MiB against 36.5 MiB (2.00x)" in text
    assert "| first call, cold, HTTP | 640.0 ms | 1500 ms | 2.34x |" in text


def test_a_runtime_that_failed_is_reported_as_failed_with_its_reason() -> None:
    text = report.render(results(runsc=False))
    assert "| first call, cold, HTTP | 640.0 ms | FAILED | — |" in text
    assert "runsc could not be measured in this run: FAILED: runsc cannot run a sandbox here" in text
    assert "gVisor (runsc) could not run a sandbox in this run: FAILED: runsc cannot run" in text


def test_results_md_is_what_results_json_gives() -> None:
    assert report.RESULTS_MD.read_text() == report.render(report.load()), (
        "bench/RESULTS.md was edited by hand or results.json changed; run `python -m bench.report`")


def scale() -> report.Scale:
    def rounds(rate: float, p99: float, cpu: float, forwarded: float = 0.0) -> list[report.ScaleRound]:
        return [report.ScaleRound(rate=rate + d, p50=0.03, p90=0.05, p99=p99 + d / 1000, max=0.2, cpu=cpu,
                                  forwarded=forwarded) for d in (-10, 0, 10)]

    return report.Scale(machine=["- machine: test"], cpus=2, threads=8, calls=25, runs=[
        report.ScaleRun(1, "pinned", rounds(180, 0.08, 0.004)),
        report.ScaleRun(2, "pinned", rounds(170, 0.09, 0.0045)),
        report.ScaleRun(2, "any", rounds(120, 0.12, 0.007, forwarded=0.5))])


def test_the_scale_table_shows_the_median_and_the_spread_of_the_rounds() -> None:
    text = report.render(report.Results(machine=["- machine: test"], rows=[], scale=scale()))
    assert ("| 2 | any gateway (random; forwarded to the holder) | 120.0 [110.0, 130.0] | 30.0 [30.0, 30.0] "
            "| 50.0 [50.0, 50.0] | 120.0 [110.0, 130.0] | 200.0 [200.0, 200.0] | 7.0 [7.0, 7.0] | 50.0 % |") in text
    assert "| 1 | the thread's own gateway | 180.0 [170.0, 190.0] | 30.0 [30.0, 30.0] |" in text
    assert ("- 2 gateways: with requests sent to any gateway (50.0 % forwarded) 120.0 calls/s against 170.0 pinned "
            "(0.71x); p99 120.0 ms against 90.0 ms; the gateways spend 7.0 ms of CPU per call against 4.5 ms "
            "pinned.") in text
    assert "- 2 gateways, pinned: 170.0 calls/s, 0.94x of one gateway's 180.0." in text
    assert "share this machine's\n2 cores, so gateways here bring no CPU of their own" in text


def test_without_a_scale_run_the_section_says_how_to_make_one() -> None:
    text = report.render(results(runsc=True))
    assert "`.venv/bin/python -m bench.scale --results` measures 1, 2 and 3" in text


def test_the_scale_run_survives_a_save_and_a_load(tmp_path: Path) -> None:
    saved = report.Results(machine=["- machine: test"], rows=[Row("1", WARM, [0.03])], scale=scale())
    report.save(saved, tmp_path / "results.json", tmp_path / "RESULTS.md")
    assert report.load(tmp_path / "results.json") == saved
