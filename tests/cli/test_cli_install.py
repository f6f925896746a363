"""A plain `pip install` of the project, then `codeinterp run --backend local`: it says what to install, and the
`local` extra makes it work. A real virtualenv, a real pip; pip's cache and the local wheel index keep it short."""

from __future__ import annotations

import os
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "sandbox", "gateway")
HINT = "pip install 'codeinterp[local]'"


def _pip(env_dir: Path, *args: str) -> None:
    done = subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", *args],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr


def _run_local(env_dir: Path, cwd: Path, code: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("CODEINTERP_", "VIRTUAL_ENV"))}
    return subprocess.run([str(env_dir / "bin" / "codeinterp"), "run", "-", "--backend", "local"], cwd=cwd,
                          env=environ, input=code, capture_output=True, text=True, timeout=300)


def test_backend_local_names_the_extra_and_the_extra_makes_it_work(tmp_path: Path) -> None:
    source = tmp_path / "src"  # a copy, so that the build leaves nothing in the checkout
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    _pip(env_dir, str(source))
    assert not (env_dir / "bin" / "ipykernel").exists()
    probe = subprocess.run([str(env_dir / "bin" / "python"), "-c", "import ipykernel"], capture_output=True)
    assert probe.returncode != 0, "a plain install should not bring ipykernel; the test would prove nothing"

    work = tmp_path / "work"
    work.mkdir()
    bare = _run_local(env_dir, work, "print(1)")
    assert bare.returncode == 125, bare.stderr
    assert HINT in bare.stderr and "ipykernel" in bare.stderr, bare.stderr
    assert "the kernel exited while starting" not in bare.stderr
    assert not (work / "codeinterp-out").exists(), "it must fail before doing anything"

    _pip(env_dir, f"{source}[local]")
    ran = _run_local(env_dir, work, "print(1)")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "1\n"
