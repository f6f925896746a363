"""Shared fixtures: a Docker backend labelled with this run's id, session factories, and a reaper.

The backend uses the runtime ``CODEINTERP_TEST_RUNTIME`` names (tests/runtime_support.py), runc when
unset.

Docker tests (``@pytest.mark.docker``) are skipped when the engine cannot be
reached, unless the ``CI`` environment variable is set: there they fail, so a
broken engine can never turn the suite green. At the end of the run every
container labelled with this run's id is removed, and the run fails if a test
left one behind.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import requests

from sandbox import Backend, DockerBackend, DockerConfig, LocalBackend, Session
from sandbox._volume import release_workdir
from tests.runtime_support import TEST_RUNTIME, skip_or_fail_in_ci

RUN_LABEL = "codeinterp.test-run"

_docker_state: dict[str, str | None] = {}


def docker_unreachable_reason() -> str | None:
    """None when the Docker engine answers a ping; why not otherwise. Checked once per run."""
    if "reason" not in _docker_state:
        try:
            client = docker.from_env(timeout=10)
            try:
                client.ping()
            finally:
                client.close()
        except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
            _docker_state["reason"] = (
                f"Docker engine unreachable ({exc}); start it with scripts/docker-up.sh"
            )
        else:
            _docker_state["reason"] = None
    return _docker_state["reason"]


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("docker") is None:
        return
    reason = docker_unreachable_reason()
    if reason is not None:
        skip_or_fail_in_ci("Docker tests", reason)


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex


def _names(containers: list[dict[str, Any]]) -> list[str]:
    return [c["Names"][0].lstrip("/") for c in containers]


async def _release_stale_workdirs() -> None:
    backend = DockerBackend(DockerConfig())
    try:
        await backend.release_stale_workdirs()
    finally:
        await backend.aclose()


@pytest.fixture(scope="session", autouse=True)
def _reap_test_containers(run_id: str) -> Iterator[None]:
    """After the run: remove this run's containers, and fail if any were left or survive removal.

    Before it: release the work dirs that earlier runs, killed before their cleanup, left mounted.
    """
    if docker_unreachable_reason() is None:
        asyncio.run(_release_stale_workdirs())
    yield
    if docker_unreachable_reason() is not None:
        return
    label = f"{RUN_LABEL}={run_id}"
    work_root = DockerConfig().work_root
    client = docker.from_env(timeout=30)
    try:
        leaked = client.api.containers(all=True, filters={"label": label})
        for container in leaked:
            try:
                client.api.remove_container(container["Id"], force=True, v=True)
            except docker.errors.NotFound:
                pass
            for mount in container.get("Mounts") or []:  # the session's data and socket dirs
                source = Path(mount.get("Source", ""))
                if mount.get("Destination") == "/mnt/data" and source.parent.parent == work_root:
                    release_workdir(source.parent)  # unmounts the quota image first
        remaining = client.api.containers(all=True, filters={"label": label})
    finally:
        client.close()
    assert not remaining, f"containers labelled {label} survive removal: {_names(remaining)}"
    assert not leaked, f"tests left {len(leaked)} container(s) behind (now removed): {_names(leaked)}"


@pytest.fixture(scope="session")
def docker_backend(run_id: str) -> Iterator[DockerBackend]:
    backend = DockerBackend(DockerConfig(labels={RUN_LABEL: run_id}, runtime=TEST_RUNTIME))
    yield backend
    asyncio.run(backend.aclose())


@pytest.fixture
async def local_backend() -> AsyncIterator[LocalBackend]:
    backend = LocalBackend()
    yield backend
    await backend.aclose()


SessionFactory = Callable[..., Awaitable[Session]]


@pytest.fixture
async def make_session(request: pytest.FixtureRequest) -> AsyncIterator[SessionFactory]:
    """``await make_session(**start_kwargs)`` starts a session (on Docker unless ``backend=``).

    Every session started through it is closed when the test ends, pass or fail.
    """
    sessions: list[Session] = []

    async def make(backend: Backend | None = None, **kwargs: Any) -> Session:
        if backend is None:
            backend = request.getfixturevalue("docker_backend")
        session = await Session.start(backend, f"test-{uuid.uuid4().hex[:12]}", **kwargs)
        sessions.append(session)
        return session

    yield make
    errors: list[Exception] = []
    for session in sessions:
        try:
            await session.close()
        except Exception as exc:  # noqa: BLE001 - close the rest, then report the first
            errors.append(exc)
    if errors:
        raise errors[0]
