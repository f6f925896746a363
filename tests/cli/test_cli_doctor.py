"""`codeinterp doctor` reports Docker's runtimes and whether the sandbox runtime is fit, with a fix when not."""

from __future__ import annotations

import os

import docker
import pytest
from cli_support import CLI

pytestmark = pytest.mark.docker


def test_the_default_runtime_passes_and_the_runtimes_are_listed(cli: CLI) -> None:
    done = cli("doctor", env={"CODEINTERP_RUNTIME": ""})
    assert done.code == 0, done.stdout
    assert "[info] Docker runtimes: " in done.stdout and "runc" in done.stdout, done.stdout
    assert "[ok] sandbox runtime runc (Docker's default" in done.stdout, done.stdout


def test_an_unregistered_runtime_fails_with_a_one_line_fix(cli: CLI) -> None:
    done = cli("doctor", env={"CODEINTERP_RUNTIME": "no-such-runtime"})
    assert done.code == 1, done.stdout
    lines = done.stdout.splitlines()
    failed = next(i for i, line in enumerate(lines) if line.startswith("[FAIL] sandbox runtime no-such-runtime"))
    assert "not registered with Docker" in lines[failed]
    assert lines[failed + 1].strip().startswith("fix: register 'no-such-runtime' in /etc/docker/daemon.json")


def test_runsc_registered_by_the_setup_passes_as_gvisor(cli: CLI) -> None:
    client = docker.from_env(timeout=30)
    try:
        registered = "runsc" in (client.info().get("Runtimes") or {})
    finally:
        client.close()
    if not registered:
        if os.environ.get("CI"):
            pytest.fail("CI runs scripts/test.sh, which registers runsc; it is not registered", pytrace=False)
        pytest.skip("runsc is not registered with Docker; run scripts/runsc-up.sh")
    done = cli("doctor", env={"CODEINTERP_RUNTIME": "runsc"})
    assert "[ok] sandbox runtime runsc (CODEINTERP_RUNTIME): gVisor, registered with --network=none" in done.stdout, (
        done.stdout)
