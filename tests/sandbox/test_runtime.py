"""The container runtime: the check `codeinterp doctor` runs, and proof that sandboxes use the runtime asked for."""

from __future__ import annotations

import docker
import pytest

from sandbox import DockerRuntimes, check_runtime
from tests.runtime_support import TEST_RUNTIME, UNDER_GVISOR

RUNC = {"path": "runc"}
RUNSC = {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=none", "--platform=ptrace", "--oci-seccomp"]}


def test_docker_s_default_runtime_is_checked_when_none_is_configured() -> None:
    check = check_runtime(None, DockerRuntimes({"runc": RUNC, "runsc": RUNSC}, default="runc"))
    assert (check.runtime, check.ok, check.gvisor) == ("runc", True, False)


def test_runsc_registered_with_network_none_is_fit() -> None:
    check = check_runtime("runsc", DockerRuntimes({"runc": RUNC, "runsc": RUNSC}, default="runc"))
    assert (check.ok, check.gvisor) == (True, True)


def test_runsc_not_registered_points_at_the_setup_script() -> None:
    check = check_runtime("runsc", DockerRuntimes({"runc": RUNC}, default="runc"))
    assert not check.ok and "not registered" in (check.problem or "")
    assert check.fix is not None and "scripts/runsc-up.sh" in check.fix


def test_gvisor_without_network_none_is_unfit_whatever_its_name() -> None:
    # What `runsc install` registers: runsc then refuses every container made with --network none.
    engine = DockerRuntimes({"runc": RUNC, "gvisor": {"path": "/usr/local/bin/runsc"}}, default="runc")
    check = check_runtime("gvisor", engine)
    assert not check.ok and check.gvisor and "--network=none" in (check.problem or "")
    assert check.fix is not None and "scripts/runsc-up.sh" in check.fix


def test_gvisor_without_oci_seccomp_is_unfit_since_the_profile_would_not_apply() -> None:
    engine = DockerRuntimes({"runc": RUNC, "runsc": {"path": "/usr/bin/runsc",
                                                     "runtimeArgs": ["--network=none", "--platform=ptrace"]}},
                            default="runc")
    check = check_runtime("runsc", engine)
    assert not check.ok and "--oci-seccomp" in (check.problem or "")


def test_an_unknown_runtime_says_how_to_register_or_unset_it() -> None:
    check = check_runtime("kata", DockerRuntimes({"runc": RUNC}, default="runc"))
    assert not check.ok and check.fix is not None and "CODEINTERP_RUNTIME" in check.fix


@pytest.mark.docker
async def test_the_sandbox_runs_under_the_runtime_asked_for(make_session):
    session = await make_session()
    client = docker.from_env(timeout=30)
    try:
        runtime = client.api.inspect_container(session.host.name)["HostConfig"]["Runtime"]
    finally:
        client.close()
    assert runtime == (TEST_RUNTIME or "runc")
    result = await session.execute("print(open('/proc/version').read().strip())", timeout=60)
    # gVisor's own kernel answers inside, with a fixed version string (dmesg, which would say "Starting
    # gVisor", needs syslog(2), which the seccomp profile refuses under both runtimes).
    gvisor_version = "Linux version 4.4.0 #1 SMP Sun Jan 10 15:06:54 PST 2016"
    assert (result.stdout.strip() == gvisor_version) == UNDER_GVISOR, result.stdout
