"""Fixtures for the command-line tests: the real `codeinterp` console script in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from cli_support import CLI, CODEINTERP, RUN_LABEL, SALES, Ran

from tests.runtime_support import runtime_env


@pytest.fixture
def cli(run_id: str, tmp_path: Path) -> CLI:
    """``cli(*args, stdin=None, env=None)`` runs `codeinterp` in tmp_path; every container it makes is labelled."""

    def run(*args: str, stdin: str | None = None, env: dict[str, str] | None = None, timeout: float = 150) -> Ran:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("CODEINTERP_")}
        environ["CODEINTERP_CONTAINER_LABELS"] = json.dumps({RUN_LABEL: run_id})
        environ.update(runtime_env())
        environ.update(env or {})
        done = subprocess.run([str(CODEINTERP), *args], cwd=tmp_path, env=environ, input=stdin, text=True,
                              capture_output=True, timeout=timeout)
        return Ran(done.returncode, done.stdout, done.stderr)

    return run


@pytest.fixture
def sales_csv(tmp_path: Path) -> Path:
    path = tmp_path / "sales.csv"
    path.write_text(SALES)
    return path
