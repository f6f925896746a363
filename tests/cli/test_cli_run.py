"""`codeinterp run` end to end: the real console script in a subprocess, against real Docker (and once without)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import nbformat
import pytest
from cli_support import CLI

PNG = b"\x89PNG\r\n\x1a\n"

ANALYSIS = """\
import pandas as pd
import matplotlib.pyplot as plt
df = pd.read_csv('/mnt/data/sales.csv')
df.plot.bar(x='region', y='units')
plt.savefig('/mnt/data/units.png')
plt.show()
df.assign(share=df.units / df.units.sum()).to_csv('/mnt/data/summary.csv', index=False)
print('total', df.units.sum())
"""


@pytest.mark.docker
def test_run_with_a_csv_saves_the_plot_and_the_csv(cli: CLI, tmp_path: Path, sales_csv: Path) -> None:
    (tmp_path / "analysis.py").write_text(ANALYSIS)
    ran = cli("run", "analysis.py", "-f", str(sales_csv), "-o", "out", "--memory", "512m",
              "--notebook", "analysis.ipynb")
    assert ran.code == 0, ran.stderr
    assert ran.stdout.strip() == "total 63"
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["display-1.png", "summary.csv", "units.png"]
    assert (out / "units.png").read_bytes().startswith(PNG)
    assert (out / "summary.csv").read_text().splitlines() == [
        "region,units,share", "north,12,0.19047619047619047", "south,30,0.47619047619047616",
        "east,21,0.3333333333333333"]
    assert "units.png" in ran.stderr and "1 cell, 3 files saved to out" in ran.stderr

    # The notebook is valid nbformat 4, and its image is the very figure saved as display-1.png.
    notebook = nbformat.read(tmp_path / "analysis.ipynb", as_version=4)
    nbformat.validate(notebook)
    [cell] = notebook.cells
    assert cell.source == ANALYSIS and cell.execution_count == 1
    images = [o for o in cell.outputs if o.output_type == "display_data" and "image/png" in o.data]
    assert len(images) == 1
    assert base64.b64decode(images[0].data["image/png"]) == (out / "display-1.png").read_bytes()
    assert {"output_type": "stream", "name": "stdout", "text": "total 63\n"} in cell.outputs


@pytest.mark.docker
def test_failing_code_from_stdin_exits_non_zero_with_the_traceback_on_stderr(cli: CLI) -> None:
    ran = cli("run", "-", "-o", "out", stdin="x = 41\nprint(x + 1)\n1 / 0\n")
    assert ran.code == 1
    assert ran.stdout == "42\n"
    assert "ZeroDivisionError" in ran.stderr and "----> 3 1 / 0" in ran.stderr
    assert "cell 1: execution_error" in ran.stderr


@pytest.mark.docker
def test_a_timeout_exits_124(cli: CLI) -> None:
    ran = cli("run", "-", "--timeout", "1", stdin="import time\ntime.sleep(30)\n")
    assert ran.code == 124
    assert "timed out after 1 s" in ran.stderr


THREE_CELLS = ["a = 2", "b = a * 3", "print(f'a + b = {a + b}')"]


def _run_steps(cells: list[str]) -> dict[str, object]:
    """An OpenAI run step list as the API returns it: newest first, one code_interpreter call per step."""
    steps = [{"id": f"step_{i}", "object": "thread.run.step", "created_at": 1_700_000_000 + i, "type": "tool_calls",
              "step_details": {"type": "tool_calls", "tool_calls": [
                  {"id": f"call_{i}", "type": "code_interpreter",
                   "code_interpreter": {"input": code, "outputs": []}}]}}
             for i, code in enumerate(cells)]
    return {"object": "list", "data": list(reversed(steps)), "has_more": False}


@pytest.mark.docker
@pytest.mark.parametrize("document", [THREE_CELLS, _run_steps(THREE_CELLS)], ids=["strings", "openai-run-steps"])
def test_cells_replay_in_one_session_sharing_variables(cli: CLI, tmp_path: Path, document: object) -> None:
    (tmp_path / "cells.json").write_text(json.dumps(document))
    ran = cli("run", "--cells", "cells.json", "-o", "out")
    assert ran.code == 0, ran.stderr
    assert ran.stdout == "a + b = 8\n"
    assert "3 cells, 0 files saved to out" in ran.stderr


def test_local_backend_runs_without_docker(cli: CLI, tmp_path: Path, sales_csv: Path) -> None:
    code = "rows = open('/mnt/data/sales.csv').read().splitlines()[1:]\n" \
           "open('/mnt/data/count.txt', 'w').write(str(len(rows)))\nprint(len(rows), 'rows')\n"
    # A dead DOCKER_HOST: any use of Docker would fail the run.
    ran = cli("run", "-", "--backend", "local", "-f", str(sales_csv), "-o", "out", stdin=code,
              env={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"})
    assert ran.code == 0, ran.stderr
    assert ran.stdout == "3 rows\n"
    assert (tmp_path / "out" / "count.txt").read_text() == "3"


def test_run_needs_a_script_or_cells(cli: CLI) -> None:
    ran = cli("run")
    assert ran.code == 2
    assert "give either SCRIPT (or - for stdin) or --cells FILE" in ran.stderr
