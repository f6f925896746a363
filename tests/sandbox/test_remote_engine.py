"""Sandboxes on a second Docker engine, reached over TCP with TLS.

The engine is real: ``scripts/remote-dockerd.sh up`` starts a dockerd in a network namespace of this
machine, with its own data root, exec root and certificates, at 10.231.7.2 (a private /30 that exists
only between this machine and that namespace). Nothing here is mocked. Every container and volume a
test makes carries this run's label, and both engines are swept by it at the end.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import docker.tls
import pytest

from sandbox import (
    BackendUnavailable,
    DockerBackend,
    DockerConfig,
    DockerHost,
    EnginePolicy,
    FileNotFound,
    FileTooLarge,
    Limits,
    NoEngineAvailable,
    Session,
    UnsafeFile,
)
from tests.conftest import RUN_LABEL
from tests.runtime_support import TEST_RUNTIME, UNDER_GVISOR

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "remote-dockerd.sh"
STATE = Path(os.environ.get("CODEINTERP_REMOTE_DIR", "/tmp/codeinterp-remote"))
LOCAL = DockerHost(os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"))


@dataclass(frozen=True)
class RemoteEngine:
    host: DockerHost
    pid_file: Path

    def client(self) -> docker.DockerClient:
        assert self.host.tls_dir is not None
        certs = self.host.tls_dir
        tls = docker.tls.TLSConfig(client_cert=(str(certs / "cert.pem"), str(certs / "key.pem")),
                                   ca_cert=str(certs / "ca.pem"), verify=True)
        client = docker.DockerClient(base_url=self.host.url, tls=tls, version="1.41", timeout=30)
        client.api.trust_env = False  # not this environment's CA bundle or proxies
        return client

    @property
    def pid(self) -> int:
        return int(self.pid_file.read_text())


def _cannot_run() -> str | None:
    if os.geteuid() != 0:
        return "scripts/remote-dockerd.sh needs root (network namespaces, a second dockerd)"
    missing = [tool for tool in ("ip", "nsenter", "dockerd", "openssl") if shutil.which(tool) is None]
    if missing:
        return f"scripts/remote-dockerd.sh needs {', '.join(missing)}"
    return None


@pytest.fixture(scope="session")
def remote_engine(run_id: str) -> Iterator[RemoteEngine]:
    reason = _cannot_run()
    if reason is not None:
        pytest.skip(reason)
    was_up = subprocess.run([str(SCRIPT), "status"], capture_output=True).returncode == 0
    done = subprocess.run([str(SCRIPT), "up"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"scripts/remote-dockerd.sh up failed:\n{done.stderr[-3000:]}"
    found = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    engine = RemoteEngine(DockerHost(found["DOCKER_HOST"], Path(found["DOCKER_CERT_PATH"])),
                          STATE / "exec" / "dockerd.pid")
    try:
        yield engine
    finally:
        os.kill(engine.pid, signal.SIGCONT)  # in case a test stopped it and failed before resuming it
        leaked = _sweep(engine, run_id)
        if not was_up:
            subprocess.run([str(SCRIPT), "down"], capture_output=True, timeout=300)
        assert not leaked, f"tests left {leaked} on the remote engine (now removed)"


def _sweep(engine: RemoteEngine, run_id: str) -> list[str]:
    """Remove this run's containers and volumes from the remote engine; what was left behind."""
    label = f"{RUN_LABEL}={run_id}"
    client = engine.client()
    try:
        leaked = []
        for container in client.api.containers(all=True, filters={"label": label}):
            leaked.append(container["Names"][0])
            client.api.remove_container(container["Id"], force=True, v=True)
        for volume in client.api.volumes(filters={"label": label}).get("Volumes") or []:
            leaked.append(volume["Name"])
            client.api.remove_volume(volume["Name"], force=True)
        return leaked
    finally:
        client.close()


@pytest.fixture
async def backend_for(run_id: str) -> AsyncIterator:
    """``backend_for(*hosts, policy=...)``: a DockerBackend on those engines, closed after the test."""
    backends: list[DockerBackend] = []
    sessions: list[Session] = []

    def make(*hosts: DockerHost, policy: EnginePolicy | None = None) -> DockerBackend:
        backend = DockerBackend(DockerConfig(hosts=hosts, labels={RUN_LABEL: run_id}, runtime=TEST_RUNTIME,
                                             placement=policy or EnginePolicy()))
        backends.append(backend)
        return backend

    async def start(backend: DockerBackend, **kwargs: object) -> Session:
        session = await Session.start(backend, f"test-{uuid.uuid4().hex[:12]}", **kwargs)  # type: ignore[arg-type]
        sessions.append(session)
        return session
    make.start = start  # type: ignore[attr-defined]
    yield make
    for session in sessions:
        try:
            await session.close()
        except BackendUnavailable:
            pass  # on a drained engine; the fixture's sweep removes it
    for backend in backends:
        await backend.aclose()


# -- the engine and the channel --------------------------------------------------------


async def test_sandbox_runs_on_the_remote_engine_over_tls(remote_engine, backend_for):
    backend = backend_for(remote_engine.host)
    session = await backend_for.start(backend)
    result = await session.execute("import socket; print(6 * 7, socket.gethostname())")
    assert result.stdout.startswith("42 ")
    assert session.host.engine == remote_engine.host.name
    client = remote_engine.client()
    try:
        assert client.api.inspect_container(session.host.name)["State"]["Running"]
    finally:
        client.close()
    local = docker.from_env()
    try:
        with pytest.raises(docker.errors.NotFound):  # not on this machine's engine
            local.api.inspect_container(session.host.name)
    finally:
        local.close()


def test_the_engine_refuses_a_client_without_a_certificate(remote_engine):
    assert remote_engine.host.tls_dir is not None
    context = ssl.create_default_context(cafile=str(remote_engine.host.tls_dir / "ca.pem"))
    address = remote_engine.host.url.removeprefix("tcp://").rsplit(":", 1)
    # Under TLS 1.3 the engine's refusal of a client without a certificate arrives on the first read.
    with pytest.raises((ssl.SSLError, ConnectionResetError)), \
            socket.create_connection((address[0], int(address[1])), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=address[0]) as tls:
        tls.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n")
        answer = tls.recv(1024)
        raise ConnectionResetError(f"no TLS refusal; the engine said {answer[:60]!r}")


# -- placement -------------------------------------------------------------------------


async def test_sandboxes_go_where_memory_is_free_and_none_when_none_is(remote_engine, backend_for):
    probe = backend_for(LOCAL, remote_engine.host)
    total = min([int(e.client().info()["MemTotal"]) for e in probe.engines])
    # Leave 1.5 GiB of placeable memory on each engine (less whatever other codeinterp sandboxes there hold):
    # one 1 GiB sandbox fits on each, a third fits nowhere.
    backend = backend_for(LOCAL, remote_engine.host, policy=EnginePolicy(memory_reserve=total - (3 << 29)))
    limits = Limits(memory="1g")
    first = await backend_for.start(backend, limits=limits)
    second = await backend_for.start(backend, limits=limits)
    assert {first.host.engine, second.host.engine} == {"local", remote_engine.host.name}
    with pytest.raises(NoEngineAvailable, match="no Docker engine can take a sandbox of 1024 MiB"):
        await backend_for.start(backend, limits=limits)
    await second.close()
    third = await backend_for.start(backend, limits=limits)  # room again where the second one was
    assert third.host.engine == second.host.engine


async def test_an_engine_that_stops_answering_is_drained(remote_engine, backend_for):
    policy = EnginePolicy(probe_timeout=4.0, max_failures=2, backoff=0.1, recheck=3600.0, timeout=10.0)
    backend = backend_for(remote_engine.host, LOCAL, policy=policy)
    # The remote engine first in line, and empty: the first sandbox goes there.
    # Small, but not too small for gVisor: its own kernel counts against the limit (an idle one, ~67 MiB).
    stranded = await backend_for.start(backend, limits=Limits(memory="256m"))
    assert stranded.host.engine == remote_engine.host.name
    os.kill(remote_engine.pid, signal.SIGSTOP)  # it keeps its socket open and answers nothing
    try:
        for _ in range(2):  # each placement waits out the probe, counts a failure, and goes local
            began = time.monotonic()
            session = await backend_for.start(backend)
            assert session.host.engine == "local"
            assert time.monotonic() - began >= policy.probe_timeout
            await asyncio.sleep(2 * policy.backoff)
        remote = next(e for e in backend.engine_report() if e["name"] == remote_engine.host.name)
        assert remote["state"] == "drained", remote
        began = time.monotonic()
        session = await backend_for.start(backend)  # not asked again: no probe to wait out
        assert session.host.engine == "local"
        assert time.monotonic() - began < policy.probe_timeout
        began = time.monotonic()
        with pytest.raises(BackendUnavailable, match="drained"):  # its sandboxes fail at once
            await stranded.list_files()
        assert time.monotonic() - began < 1.0
    finally:
        os.kill(remote_engine.pid, signal.SIGCONT)
    # The stranded sandbox: the drained backend leaves it there; one that knows the engine as healthy removes it.
    await backend_for(remote_engine.host).remove_container(stranded.host.name)
    assert next(e for e in backend.engine_report() if e["name"] == remote_engine.host.name)["state"] == "drained"


# -- /mnt/data through the archive API ----------------------------------------------------


@pytest.fixture
async def remote_session(remote_engine, backend_for) -> Session:
    backend = backend_for(remote_engine.host)
    return await backend_for.start(backend, limits=Limits(data_size="8m"))


async def test_files_written_by_code_come_back_with_their_hash(remote_session):
    result = await remote_session.execute(
        "import os; os.makedirs('/mnt/data/out', exist_ok=True)\n"
        "open('/mnt/data/out/table.csv', 'w').write('a,b\\n1,2\\n')")
    assert [f.path for f in result.files] == ["out/table.csv"]
    assert result.files[0].sha256 == "492d5ea496056f1a6a6592241032fab764c321596317930b4fa0e1e8bc3b7470"
    assert await remote_session.read_file("out/table.csv") == b"a,b\n1,2\n"
    assert [f.path for f in await remote_session.list_files()] == ["out/table.csv"]


async def test_uploads_never_overwrite_and_arrive_owned_by_the_sandbox(remote_session):
    first = await remote_session.write_file("data.csv", b"one")
    second = await remote_session.write_file("data.csv", b"two")
    assert (first.path, second.path) == ("data.csv", "data-1.csv")
    result = await remote_session.execute(
        "import os; print(open('/mnt/data/data.csv').read(), open('/mnt/data/data-1.csv').read(),"
        " os.stat('/mnt/data/data.csv').st_uid)")
    assert result.stdout.split() == ["one", "two", "1000"]
    await remote_session.delete_file("data-1.csv")
    assert [f.path for f in await remote_session.list_files()] == ["data.csv"]


async def test_symlinks_fifos_and_directories_are_never_served(remote_session, tmp_path):
    await remote_session.execute(
        "import os\n"
        "os.symlink('/etc/passwd', '/mnt/data/passwd')\n"
        "os.mkfifo('/mnt/data/pipe')\n"
        "os.makedirs('/mnt/data/real')\n"
        "os.symlink('/etc', '/mnt/data/etc')\n")
    for path in ("passwd", "pipe", "real", "etc/passwd"):
        # Under gVisor a FIFO exists only in gVisor's own view of the volume: the engine sees no file at all.
        refused = FileNotFound if UNDER_GVISOR and path == "pipe" else UnsafeFile
        with pytest.raises(refused):
            await remote_session.read_file(path)
        with pytest.raises(refused):
            await remote_session.export_file(path, tmp_path / "out")
    assert not list(tmp_path.iterdir())
    assert [f.path for f in await remote_session.list_files()] == []  # only regular files are listed
    with pytest.raises(UnsafeFile):  # an upload is not written through a planted link
        await remote_session.write_file("etc/x.txt", b"x", parents=True)
    with pytest.raises(FileNotFound):
        await remote_session.read_file("../../etc/passwd")


async def test_size_caps_and_the_quota_hold(remote_session, tmp_path):
    await remote_session.execute("open('/mnt/data/big.bin', 'wb').write(b'x' * 3_000_000)")
    with pytest.raises(FileTooLarge):
        await remote_session.read_file("big.bin", max_bytes=1_000_000)
    with pytest.raises(FileTooLarge):
        await remote_session.export_file("big.bin", tmp_path / "big", max_bytes=1_000_000)
    assert (await remote_session.export_file("big.bin", tmp_path / "big")).size == 3_000_000
    with pytest.raises(FileTooLarge):
        await remote_session.write_file("upload.bin", b"y" * 2_000_000, max_bytes=1_000_000)
    with pytest.raises(FileTooLarge):  # 3 MB used of 8 MB: 6 MB more does not fit
        await remote_session.write_file("upload.bin", b"y" * 6_000_000)
    result = await remote_session.execute(
        "try:\n    open('/mnt/data/fill.bin', 'wb').write(b'z' * 9_000_000)\nexcept OSError as e:\n    print(e.errno)")
    assert result.stdout.strip() == "28"  # ENOSPC: the code cannot pass the quota either
    assert "upload.bin" not in [f.path for f in await remote_session.list_files()]


async def test_a_restart_keeps_the_files(remote_session):
    await remote_session.execute("x = 1; open('/mnt/data/kept.txt', 'w').write('still here')")
    await remote_session.restart()
    result = await remote_session.execute("print('x' in globals(), open('/mnt/data/kept.txt').read())")
    assert result.stdout.strip() == "False still here"
