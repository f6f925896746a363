"""Work dirs of sandboxes whose containers were removed outside the library: found and released.

A session's /mnt/data is a loop-mounted image in a work dir on the host. Removing its
container with ``docker rm -f`` (or killing the process that held it) leaves the mount,
and its loop device, until something releases them.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import docker
import pytest

from sandbox import DockerBackend, Session

pytestmark = pytest.mark.docker


def backdate(root: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(root, (then, then))


async def test_only_old_work_dirs_without_a_container_are_released(docker_backend, tmp_path):
    # A work root of its own: the shared one sees other runs' sandboxes come and go.
    backend = DockerBackend(dataclasses.replace(docker_backend.config, work_root=tmp_path / "w"))
    sessions = [await Session.start(backend, f"workdir-{i}") for i in range(3)]
    try:
        live, removed, just_removed = (s.host.data.path.parent for s in sessions if s.host.data is not None)
        mounted = [os.path.ismount(root / "data") for root in (live, removed, just_removed)]
        client = docker.from_env()
        try:
            for session in sessions[1:]:  # removed behind the library's back
                client.api.remove_container(session.host.name, force=True, v=True)
        finally:
            client.close()
        for root in (live, removed):
            backdate(root, 3600)
        (tmp_path / "w" / "not-a-workdir").mkdir()
        backdate(tmp_path / "w" / "not-a-workdir", 3600)

        assert await backend.release_stale_workdirs(older_than=600) == 1
        assert not removed.exists()
        assert live.is_dir() and os.path.ismount(live / "data") == mounted[0]  # its container still runs
        assert just_removed.is_dir()  # too young: it may be a start under way in another process
        assert (tmp_path / "w" / "not-a-workdir").is_dir()  # not a name the backend gives
        result = await sessions[0].execute("open('/mnt/data/still.txt', 'w').write('here'); print('ok')")
        assert result.stdout == "ok\n"

        backdate(just_removed, 3600)
        assert await backend.release_stale_workdirs(older_than=600) == 1
        assert not just_removed.exists()
    finally:
        for session in sessions:
            await session.close()
        await backend.aclose()
