"""Helpers for the command-line tests, importable by name (pytest puts this directory on sys.path)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

RUN_LABEL = "codeinterp.test-run"  # tests/conftest.py sweeps this label and fails the run on leftovers
CODEINTERP = Path(sys.executable).with_name("codeinterp")
SALES = "region,units\nnorth,12\nsouth,30\neast,21\n"


@dataclass(frozen=True)
class Ran:
    code: int
    stdout: str
    stderr: str


CLI = Callable[..., Ran]
