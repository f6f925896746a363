"""The parts of `codeinterp run` that need no sandbox: reading cells, building notebooks."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import nbformat
import pytest

import gateway.notebook
import sandbox
from gateway.notebook import cell_from_result, notebook
from gateway.runner import cells_from_json


def test_cells_from_strings_tool_calls_and_response_items() -> None:
    assert cells_from_json(["a = 1", "print(a)"]) == ["a = 1", "print(a)"]
    tool_calls = [{"type": "code_interpreter", "code_interpreter": {"input": "x = 1"}},
                  {"type": "function", "function": {"name": "f"}},
                  {"type": "code_interpreter_call", "code": "print(x)"}]
    assert cells_from_json(tool_calls) == ["x = 1", "print(x)"]


def test_run_steps_listed_newest_first_are_replayed_oldest_first() -> None:
    steps = [{"created_at": t, "step_details": {"tool_calls": [{"code_interpreter": {"input": code}}]}}
             for t, code in ((3, "third"), (2, "second"), (1, "first"))]
    assert cells_from_json({"data": steps}) == ["first", "second", "third"]
    assert cells_from_json(list(reversed(steps))) == ["first", "second", "third"]


@pytest.mark.parametrize("document", [{"data": []}, {"cells": ["x"]}, [{"type": "file_search"}]])
def test_documents_without_code_are_refused(document: object) -> None:
    with pytest.raises(ValueError, match="code"):
        cells_from_json(document)


def test_a_result_becomes_a_valid_notebook_cell() -> None:
    result = sandbox.ExecutionResult(
        outcome=sandbox.Outcome.ERROR, execution_count=3, outputs=(
            sandbox.Stream("stdout", "hi\n"),
            sandbox.Display({"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}),
            sandbox.Display({"text/plain": "42"}, is_result=True),
            sandbox.Notice("output was truncated"),
            sandbox.ExecutionError("ValueError", "bad", ("ValueError: bad",))))
    document = notebook([cell_from_result("print('hi')", result)])
    nbformat.validate(nbformat.from_dict(document))
    outputs = document["cells"][0]["outputs"]
    assert [o["output_type"] for o in outputs] == ["stream", "display_data", "execute_result", "stream", "error"]
    assert outputs[1]["data"]["image/png"] == "iVBORw0KGgo="
    assert outputs[2]["execution_count"] == 3
    assert outputs[3] == {"output_type": "stream", "name": "stderr", "text": "output was truncated\n"}


def test_the_notebook_builder_imports_only_the_standard_library_and_sandbox() -> None:
    """gateway/notebook.py says so in its docstring; the command line and the gateway share it."""
    tree = ast.parse(Path(gateway.notebook.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {("." if node.level else "") + (node.module or "").split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)}
    foreign = {name for name in imported if name not in sys.stdlib_module_names and name != "sandbox"}
    assert foreign == set(), f"gateway/notebook.py imports {sorted(foreign)}"
