"""Which container runtime the Docker suites use: ``CODEINTERP_TEST_RUNTIME=runsc`` runs them under gVisor.

The library fixtures (``docker_backend``), the gateway and hostile test servers and the CLI tests all
read it from here, so one variable moves every sandbox a test starts to that runtime. Unset (or empty)
means Docker's default, runc.
"""

from __future__ import annotations

import os

import pytest

__all__ = ["TEST_RUNTIME", "UNDER_GVISOR", "runtime_env", "skip_or_fail_in_ci", "skip_under_gvisor"]

TEST_RUNTIME: str | None = os.environ.get("CODEINTERP_TEST_RUNTIME") or None
UNDER_GVISOR = TEST_RUNTIME == "runsc"


def runtime_env() -> dict[str, str]:
    """What a `codeinterp` subprocess needs in its environment to use the test runtime."""
    return {"CODEINTERP_RUNTIME": TEST_RUNTIME} if TEST_RUNTIME else {}


def skip_under_gvisor(why: str) -> pytest.MarkDecorator:
    """Skip a test that cannot apply under gVisor; ``why`` says what gVisor makes meaningless."""
    return pytest.mark.skipif(UNDER_GVISOR, reason=f"not under gVisor: {why}")


def skip_or_fail_in_ci(what: str, reason: str) -> None:
    """Skip for ``reason``; but under CI, where everything must run, fail instead."""
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so {what} may not be skipped: {reason}", pytrace=False)
    pytest.skip(reason)
