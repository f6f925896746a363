"""Fixtures for the gateway's HTTP tests: real `codeinterp serve` subprocesses over the real Docker backend."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gateway_support import TEST_DATABASE, PostgresCluster, ServerFactory, ServerProcess, servers, use_cluster


@pytest.fixture(scope="session")
def postgres(run_id: str) -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster of this run's own (scripts/postgres.sh), removed when the run ends.

    Without PostgreSQL installed its tests are skipped, unless CI is set: there they fail.
    """
    if not PostgresCluster.installed():
        message = "PostgreSQL is not installed (apt-get install postgresql-15)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    # Under /tmp, not pytest's 0700 tmp dir: the server runs as the postgres user.
    cluster = PostgresCluster(Path(f"/tmp/codeinterp-pg-test-{run_id}"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session", autouse=True)
def _test_database(request: pytest.FixtureRequest) -> Iterator[None]:
    """With CODEINTERP_TEST_DATABASE=postgres, every test server gets a database in the test cluster."""
    if TEST_DATABASE != "postgres":
        yield
        return
    use_cluster(request.getfixturevalue("postgres"))
    try:
        yield
    finally:
        use_cluster(None)


@pytest.fixture(scope="module")
def module_servers(run_id: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerFactory]:
    """``module_servers(data_dir=..., env=...)`` starts a server that lives until the module ends."""
    with servers(run_id, tmp_path_factory.mktemp("gateway")) as make:
        yield make


@pytest.fixture
def start_server(run_id: str, tmp_path: Path) -> Iterator[ServerFactory]:
    """``start_server(data_dir=..., env=...)`` starts a server that lives until the test ends."""
    with servers(run_id, tmp_path) as make:
        yield make


@pytest.fixture(scope="module")
def server(module_servers: ServerFactory) -> ServerProcess:
    """The module's shared server: no auth, default settings, a fresh data dir."""
    return module_servers()


@pytest.fixture(scope="module")
def url(server: ServerProcess) -> str:
    return server.url


@pytest.fixture(scope="module")
def http(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=httpx.Timeout(120.0, connect=10.0)) as client:
        yield client
