"""scripts/docker_runtime.py register: runsc goes into daemon.json merged with what is there, idempotently."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "docker_runtime.py"
RUNSC = {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=none", "--platform=ptrace", "--oci-seccomp"]}


def register(daemon_json: Path) -> subprocess.CompletedProcess[str]:
    # The system interpreter's way of running it does not matter: the script uses only the stdlib.
    return subprocess.run([sys.executable, str(SCRIPT), "register", "--file", str(daemon_json),
                           "--runsc", "/usr/bin/runsc"], capture_output=True, text=True, timeout=30)


def test_a_missing_file_is_created_with_runsc_and_experimental(tmp_path: Path) -> None:
    daemon_json = tmp_path / "docker" / "daemon.json"
    done = register(daemon_json)
    assert (done.returncode, done.stdout) == (0, "changed\n"), done.stderr
    assert json.loads(daemon_json.read_text()) == {"runtimes": {"runsc": RUNSC}, "experimental": True}


def test_other_settings_and_runtimes_are_kept_and_a_second_run_changes_nothing(tmp_path: Path) -> None:
    daemon_json = tmp_path / "daemon.json"
    mine = {"log-driver": "journald", "runtimes": {"kata": {"path": "/opt/kata/bin/kata-runtime"}},
            "default-ulimits": {"nofile": {"Name": "nofile", "Hard": 64000, "Soft": 64000}}}
    daemon_json.write_text(json.dumps(mine))
    assert register(daemon_json).stdout == "changed\n"
    written = daemon_json.read_text()
    assert json.loads(written) == {**mine, "runtimes": {**mine["runtimes"], "runsc": RUNSC}, "experimental": True}
    again = register(daemon_json)
    assert (again.returncode, again.stdout) == (0, "unchanged\n")
    assert daemon_json.read_text() == written


def test_a_runsc_registered_without_the_network_arg_is_corrected(tmp_path: Path) -> None:
    daemon_json = tmp_path / "daemon.json"
    # What `runsc install` writes: no runtime args, so runsc refuses Docker's --network none.
    daemon_json.write_text(json.dumps({"runtimes": {"runsc": {"path": "/usr/local/bin/runsc"}},
                                       "experimental": True}))
    assert register(daemon_json).stdout == "changed\n"
    assert json.loads(daemon_json.read_text())["runtimes"]["runsc"] == RUNSC


def test_a_file_that_is_not_json_is_left_alone_with_a_clear_error(tmp_path: Path) -> None:
    daemon_json = tmp_path / "daemon.json"
    daemon_json.write_text('{"log-driver": "journald",}')
    done = register(daemon_json)
    assert done.returncode == 2 and "not valid JSON" in done.stderr and "nothing was changed" in done.stderr
    assert daemon_json.read_text() == '{"log-driver": "journald",}'
