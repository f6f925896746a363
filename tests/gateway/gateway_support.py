"""Helpers for the gateway's HTTP tests: a real `codeinterp serve` subprocess, Docker sweeps, error checks.

Every server gets the session's ``codeinterp.test-run`` label plus a label of its own
(``codeinterp.test-server``) on every sandbox container it starts, so that stopping one
server sweeps exactly its containers and nothing another fixture still uses.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
import pytest

from tests.runtime_support import runtime_env

RUN_LABEL = "codeinterp.test-run"  # the lead's tests/conftest.py sweeps this label at session end
SERVER_LABEL = "codeinterp.test-server"
REPO = Path(__file__).resolve().parents[2]
CODEINTERP = Path(sys.executable).with_name("codeinterp")
HEALTH_TIMEOUT = 30.0
STOP_TIMEOUT = 45.0  # uvicorn's own graceful shutdown allows 30 s


TEST_DATABASE = os.environ.get("CODEINTERP_TEST_DATABASE", "sqlite")  # "postgres": servers use the test cluster


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 60, interval: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned), or fail the test naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}")


def thread_call(http: httpx.Client, thread: str, code: str) -> dict[str, Any]:
    """One call on a thread; the response must be a 200 (its status is the caller's to check)."""
    response = http.post(f"/v1/threads/{thread}/code_interpreter/calls", json={"input": code})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


class PostgresCluster:
    """A throwaway PostgreSQL cluster made by scripts/postgres.sh in ``root``: one database per data dir."""

    script = REPO / "scripts" / "postgres.sh"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {**os.environ, "CODEINTERP_PG_DIR": str(root)}

    @staticmethod
    def installed() -> bool:
        return Path("/usr/lib/postgresql/15/bin/pg_ctl").exists() or shutil.which("pg_ctl") is not None

    def _run(self, *args: str) -> str:
        done = subprocess.run([str(self.script), *args], capture_output=True, text=True, timeout=120, env=self.env)
        if done.returncode != 0:
            pytest.fail(f"scripts/postgres.sh {' '.join(args)} failed ({done.returncode}):\n{done.stderr}",
                        pytrace=False)
        return done.stdout.strip()

    def running(self) -> bool:
        return subprocess.run([str(self.script), "status"], capture_output=True, timeout=60,
                              env=self.env).returncode == 0

    def start(self) -> str:
        return self._run("start")

    def stop(self) -> None:
        self._run("stop")

    def destroy(self) -> None:
        """Stop it and remove its data: nothing is left running or on disk."""
        self._run("destroy")

    def database(self, name: str) -> str:
        """The URL of database ``name``, made empty the first time it is asked for."""
        return self._run("createdb", name)

    def drop(self, name: str) -> None:
        self._run("dropdb", name)

    @staticmethod
    def name_for(run_id: str, data_dir: Path) -> str:
        """One database per test run and data dir, so a restarted server on the same data dir finds its state."""
        return "t_" + hashlib.sha256(f"{run_id}:{data_dir.resolve()}".encode()).hexdigest()[:20]


# Set by the gateway tests' session fixture when CODEINTERP_TEST_DATABASE=postgres.
_cluster: list[PostgresCluster] = []


def use_cluster(cluster: PostgresCluster | None) -> None:
    _cluster[:] = [cluster] if cluster else []


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def labelled_containers(*labels: str) -> list[Any]:
    """Docker containers (running or not) carrying every given ``key=value`` label."""
    client = docker.from_env(timeout=30)
    try:
        return list(client.containers.list(all=True, filters={"label": list(labels)}))
    finally:
        client.close()


def remove_labelled(*labels: str) -> list[str]:
    """Force-remove the containers carrying every given label; their names."""
    client = docker.from_env(timeout=30)
    removed = []
    try:
        for container in client.containers.list(all=True, filters={"label": list(labels)}):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)
            removed.append(container.name)
    finally:
        client.close()
    return removed


class ServerProcess:
    """One `codeinterp serve` on a free loopback port, with its stderr kept in a file."""

    def __init__(self, run_id: str, data_dir: Path, log_dir: Path, env: dict[str, str] | None = None,
                 args: tuple[str, ...] = ()) -> None:
        self.run_id = run_id
        self.server_id = uuid.uuid4().hex[:12]
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stderr_path = log_dir / f"server-{self.server_id}.stderr"
        self.args = args
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CODEINTERP_")}
        self.env.update({
            "CODEINTERP_CONTAINER_LABELS": json.dumps({RUN_LABEL: run_id, SERVER_LABEL: self.server_id}),
            "PYTHONUNBUFFERED": "1",
            # Pooled sandboxes carry no codeinterp.container label and load the machine; tests of
            # the pool turn it on themselves.
            "CODEINTERP_POOL_SIZE": "0",
            # Under gVisor a stop would hibernate every sandbox (kept on purpose) where the suites check
            # that nothing is left behind; the hibernation tests turn it on themselves.
            "CODEINTERP_HIBERNATE": "false",
            **runtime_env(),  # CODEINTERP_TEST_RUNTIME, so the suites can run under gVisor
        })
        self.env.update(env or {})
        if _cluster and "CODEINTERP_DATABASE_URL" not in self.env:
            self.env["CODEINTERP_DATABASE_URL"] = _cluster[0].database(PostgresCluster.name_for(run_id, data_dir))
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None

    @property
    def labels(self) -> tuple[str, str]:
        return f"{RUN_LABEL}={self.run_id}", f"{SERVER_LABEL}={self.server_id}"

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self) -> ServerProcess:
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                [str(CODEINTERP), "serve", "--port", str(self.port), "--data-dir", str(self.data_dir),
                 *self.args],
                cwd=REPO, env=self.env, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        deadline = time.monotonic() + HEALTH_TIMEOUT
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                response = httpx.get(f"{self.url}/healthz", timeout=5)
            except httpx.TransportError as exc:
                last = repr(exc)
            else:
                if response.status_code == 200:
                    return self
                last = f"{response.status_code} {response.text}"
            time.sleep(0.1)
        code = self.proc.poll()
        self.stop()
        message = (f"codeinterp serve did not become healthy within {HEALTH_TIMEOUT:g} s "
                   f"(exit code {code}, last /healthz: {last}).\n--- server stderr ---\n{self.stderr()}")
        print(message, file=sys.stderr)
        pytest.fail(message, pytrace=False)

    def stop(self) -> int | None:
        """SIGTERM, wait, SIGKILL if it hangs; the exit code (None if it had to be killed)."""
        proc = self.proc
        if proc is None:
            return self.exit_code
        self.proc = None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                self.exit_code = proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
                self.exit_code = None
        else:
            self.exit_code = proc.returncode
        return self.exit_code

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to clean up."""
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()
            self.exit_code = proc.wait(30)

    def sweep(self) -> list[str]:
        """Remove every container this server started that is still there."""
        return remove_labelled(*self.labels)




ServerFactory = Callable[..., ServerProcess]


def assert_openai_error(response: httpx.Response, status: int, *, param: str | None = None) -> dict[str, Any]:
    """The response has ``status`` and exactly OpenAI's error shape; the error object."""
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {response.text}"
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str) and error["type"], error
    assert error["param"] is None or isinstance(error["param"], str), error
    assert error["code"] is None or isinstance(error["code"], str), error
    if param is not None:
        assert error["param"] == param, error
    return error


def sse_events(response: httpx.Response) -> Iterator[tuple[str | None, str, float]]:
    """Server-Sent Events of a streamed response: (event name, data, time.monotonic() on arrival)."""
    name: str | None = None
    data: list[str] = []
    for line in response.iter_lines():
        if line == "":
            if data:
                yield name, "\n".join(data), time.monotonic()
            name, data = None, []
        elif line.startswith("event:"):
            name = line[len("event:"):].strip()
        elif line.startswith("data:"):
            data.append(line[len("data:"):].removeprefix(" "))
    if data:
        yield name, "\n".join(data), time.monotonic()


@contextlib.contextmanager
def servers(run_id: str, base: Path) -> Iterator[ServerFactory]:
    """A factory of live servers under ``base``; on exit it stops them and fails on leaked containers."""
    started: list[ServerProcess] = []

    def make(*, data_dir: Path | None = None, env: dict[str, str] | None = None,
             args: tuple[str, ...] = ()) -> ServerProcess:
        if data_dir is None:
            data_dir = base / f"data-{len(started)}"
        server = ServerProcess(run_id, data_dir, base, env, args)
        started.append(server)
        return server.start()

    try:
        yield make
    finally:
        leaks = []
        for server in started:
            # uvicorn re-raises the SIGTERM it handled, so a graceful stop ends with -SIGTERM.
            clean = server.stop() in (0, -signal.SIGTERM)
            left = server.sweep()
            if clean and left:
                leaks.append(f"server {server.server_id} exited cleanly but left containers {left}")
        assert not leaks, "; ".join(leaks)
