"""Hibernation under gVisor: an idle sandbox keeps its Python memory on disk and the next call wakes it.

These run only where Docker has the ``runsc`` runtime and experimental features (checkpoints).
Elsewhere they skip with the reason, unless ``CI`` is set: there they fail, as Docker tests do.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from gateway_support import ServerFactory, ServerProcess, labelled_containers, thread_call, wait_for

from tests.runtime_support import skip_or_fail_in_ci

pytestmark = pytest.mark.docker

FAST_EXPIRY = {"CODEINTERP_RUNTIME": "runsc", "CODEINTERP_HIBERNATE": "true",
               "CODEINTERP_THREAD_EXPIRY_MINUTES": "0.05", "CODEINTERP_EXPIRY_INTERVAL": "0.5"}
SLOW_EXPIRY = {"CODEINTERP_RUNTIME": "runsc", "CODEINTERP_HIBERNATE": "true", "CODEINTERP_THREAD_EXPIRY_MINUTES": "60"}
# A 50 MB DataFrame (820,000 x 8 float64), loaded from a file that is then deleted: a later call that
# sees the DataFrame cannot have re-read it. (.npy, not CSV: a 125 MB CSV takes long under gVisor.)
LOAD = """
import os, secrets
import numpy as np, pandas as pd, matplotlib.pyplot as plt
np.save("/mnt/data/big.npy", np.random.default_rng(7).random((820_000, 8)))
df = pd.DataFrame(np.load("/mnt/data/big.npy"), columns=list("abcdefgh"))
os.remove("/mnt/data/big.npy")
print("dataframe MiB", df.memory_usage().sum() >> 20)
total = round(float(df["c"].sum()), 6)
token = secrets.token_hex(8)
fig, ax = plt.subplots()
ax.plot(df["a"][:100])
open("/mnt/data/kept.txt", "w").write("kept")
print("token", token, "total", total)
"""
CHECK = ("import os\nprint('shape', df.shape, 'total', round(float(df['c'].sum()), 6) == total, 'token', token, "
         "'lines', len(fig.axes[0].lines), 'file', os.path.exists('/mnt/data/big.npy'), "
         "'kept', open('/mnt/data/kept.txt').read())")


def runsc_unavailable_reason() -> str | None:
    client = docker.from_env(timeout=10)
    try:
        info = client.info()
    finally:
        client.close()
    if "runsc" not in (info.get("Runtimes") or {}):
        return "Docker has no runsc runtime; register gVisor with scripts/setup.sh"
    if not info.get("ExperimentalBuild"):
        return 'Docker experimental features are off (checkpoints need "experimental": true in daemon.json)'
    return None


@pytest.fixture(autouse=True)
def _runsc() -> None:
    reason = runsc_unavailable_reason()
    if reason is not None:
        skip_or_fail_in_ci("hibernation tests", reason)




def call(http: httpx.Client, thread: str, code: str) -> dict[str, Any]:
    body = thread_call(http, thread, code)
    assert body["status"] == "completed", body
    return body


def logs(body: dict[str, Any]) -> str:
    return "".join(o["logs"] for o in body["code_interpreter"]["outputs"] if o["type"] == "logs")


def status(http: httpx.Client, thread: str) -> str:
    """The thread's container status, read without touching it (a container retrieve would)."""
    return str(http.get(f"/v1/threads/{thread}/code_interpreter").json()["container"]["status"])


def metric(http: httpx.Client, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", http.get("/metrics").text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def docker_state(server: ServerProcess, container_id: str) -> tuple[str, str]:
    (container,) = labelled_containers(f"codeinterp.container={container_id}", server.labels[0])
    return container.id, container.status


def checkpoint_dir(docker_id: str) -> Path:
    return Path("/var/lib/docker/containers") / docker_id / "checkpoints" / "hibernated"


def load_and_hibernate(http: httpx.Client, server: ServerProcess, thread: str) -> tuple[str, str]:
    """Load the DataFrame and draw, wait for the idle sandbox to hibernate; (container id, token)."""
    first = call(http, thread, LOAD)
    token = re.search(r"token (\w+)", logs(first))
    assert token, logs(first)
    assert "dataframe MiB 50\n" in logs(first), logs(first)
    container_id = first["container_id"]
    wait_for(lambda: status(http, thread) == "hibernated", "the idle sandbox to hibernate")
    docker_id, state = docker_state(server, container_id)
    assert state == "exited"  # no process, no RAM: the memory is in the checkpoint
    assert checkpoint_dir(docker_id).is_dir()
    return container_id, token.group(1)


def assert_woken(body: dict[str, Any], token: str) -> None:
    assert (body["session_restored"], body["restored"]) == (True, "memory"), body
    assert logs(body) == (f"shape (820000, 8) total True token {token} lines 1 file False kept kept\n")


def test_an_idle_thread_hibernates_and_wakes_with_its_dataframe_and_figure(start_server: ServerFactory) -> None:
    server = start_server(env=FAST_EXPIRY)
    with httpx.Client(base_url=server.url, timeout=120) as http:
        container_id, token = load_and_hibernate(http, server, "hib")
        assert http.get(f"/v1/containers/{container_id}").json()["status"] == "hibernated"
        assert metric(http, "codeinterp_hibernated") == 1
        assert metric(http, "codeinterp_checkpoint_bytes") > 1 << 20

        woken = call(http, "hib", CHECK)
        assert woken["container_id"] == container_id
        assert_woken(woken, token)
        assert status(http, "hib") == "running"
        assert metric(http, "codeinterp_hibernated") == 0
        assert metric(http, 'codeinterp_restore_seconds_count{restored="memory"}') == 1
        again = call(http, "hib", "print(df.shape)")
        assert (again["session_restored"], again["restored"], logs(again)) == (False, None, "(820000, 8)\n")
        http.delete(f"/v1/containers/{container_id}")


def test_deleting_a_hibernated_container_removes_it_and_its_checkpoint(start_server: ServerFactory) -> None:
    server = start_server(env=FAST_EXPIRY)
    with httpx.Client(base_url=server.url, timeout=120) as http:
        made = call(http, "gone", "x = 1")
        container_id = made["container_id"]
        wait_for(lambda: status(http, "gone") == "hibernated", "the idle sandbox to hibernate")
        docker_id, _ = docker_state(server, container_id)
        assert checkpoint_dir(docker_id).is_dir()
        assert http.delete(f"/v1/containers/{container_id}").status_code == 200
        assert labelled_containers(f"codeinterp.container={container_id}") == []
        assert not checkpoint_dir(docker_id).exists()
        assert metric(http, "codeinterp_hibernated") == 0


def test_hibernated_sandboxes_stay_wakeable_across_a_crash_and_a_clean_restart(
        start_server: ServerFactory, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = start_server(data_dir=data_dir, env=FAST_EXPIRY)
    with httpx.Client(base_url=first.url, timeout=120) as http:
        container_id, token = load_and_hibernate(http, first, "keep")
    first.kill()  # kill -9: no shutdown code runs

    second = start_server(data_dir=data_dir, env=SLOW_EXPIRY)
    with httpx.Client(base_url=second.url, timeout=120) as http:
        assert status(http, "keep") == "hibernated"
        assert metric(http, "codeinterp_hibernated") == 1
        assert_woken(call(http, "keep", CHECK), token)
    # SIGTERM hibernates the live idle sandbox rather than dropping its memory.
    assert second.stop() in (0, -15)
    assert docker_state(second, container_id)[1] == "exited"

    third = start_server(data_dir=data_dir, env=SLOW_EXPIRY)
    with httpx.Client(base_url=third.url, timeout=120) as http:
        assert status(http, "keep") == "hibernated"
        assert_woken(call(http, "keep", CHECK), token)
        assert http.delete(f"/v1/containers/{container_id}").status_code == 200


def test_a_failed_restore_falls_back_to_the_files(start_server: ServerFactory) -> None:
    server = start_server(env=FAST_EXPIRY)
    with httpx.Client(base_url=server.url, timeout=120) as http:
        container_id, _ = load_and_hibernate(http, server, "broken")
        docker_id, _ = docker_state(server, container_id)
        image = checkpoint_dir(docker_id) / "checkpoint.img"
        image.write_bytes(b"not a checkpoint")

        resumed = call(http, "broken", "print('df' in globals(), open('/mnt/data/kept.txt').read())")
        assert (resumed["session_restored"], resumed["restored"]) == (True, "files"), resumed
        notice, rest = logs(resumed).split("\n", 1)
        assert "could not be restored" in notice and "files in /mnt/data are in place" in notice
        assert rest == "False kept\n"
        assert metric(http, 'codeinterp_restore_seconds_count{restored="files"}') == 1
        assert labelled_containers(f"codeinterp.container={container_id}", server.labels[0])[0].id != docker_id
        http.delete(f"/v1/containers/{container_id}")
