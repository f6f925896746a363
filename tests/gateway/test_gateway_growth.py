"""What the gateway keeps grows only with what it must keep: deltas, file versions, scratch files, the byte count.

Over sandbox.testing.FakeBackend and a real SQLite store and file store: no Docker.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import pytest
from fake_support import OWNER, Harness, chunks, harness

import sandbox
from gateway.blobs import BlobStore
from gateway.composition import Gateway
from gateway.errors import TooLarge
from gateway.settings import Settings
from sandbox.testing import FakeBackend

__all__ = ["harness"]  # a fixture, imported to be used here


def disk_bytes(blobs: BlobStore) -> int:
    return sum(p.stat().st_size for p in blobs.root.iterdir() if p.is_file())


@pytest.mark.parametrize("stream", [False, True])
async def test_deltas_are_kept_only_for_a_call_someone_streams(harness: Harness, stream: bool) -> None:
    async def prints(code: str) -> Sequence[sandbox.Output]:
        return [sandbox.Stream(name="stdout", text=f"{i}\n") for i in range(200)]

    harness.backend.on_execute = prints
    record, session, _ = await harness.service.thread_session(OWNER, "t")
    run = await harness.calls.start(OWNER, record, session, code="loop", file_ids=(), timeout=None, stream=stream)
    body = await harness.calls.wait(run)
    assert body["code_interpreter"]["outputs"][0]["logs"] == "".join(f"{i}\n" for i in range(200))
    # Streamed: the input, each output, and the end; not streamed: nothing waits for a reader that never comes.
    assert run.deltas.qsize() == (1 + 200 + 1 if stream else 0)


class Writes:
    """An on_execute handler that writes what the code names into the running sandbox's /mnt/data."""

    def __init__(self, backend: FakeBackend) -> None:
        self.backend = backend

    async def __call__(self, code: str) -> Sequence[sandbox.Output]:
        (host,) = self.backend.running.values()
        name, content = code.split("=", 1)
        (host.data.path / name).write_text(content)
        return ()


async def run(harness: Harness, code: str) -> dict[str, object]:
    record, session, _ = await harness.service.thread_session(OWNER, "t")
    return await harness.calls.wait(
        await harness.calls.start(OWNER, record, session, code=code, file_ids=(), timeout=None))


async def stored(harness: Harness, file_id: str) -> bool:
    present = await harness.store.get_file(OWNER, file_id) is not None
    assert present == harness.blobs.path(file_id).is_file()
    return present


async def kept_version(harness: Harness, container_id: str, path: str) -> str:
    (row,) = [r for r in await harness.store.container_files(container_id) if r.path == path]
    assert row.file_id is not None
    return row.file_id


async def test_a_version_only_an_expiry_kept_is_deleted_once_a_call_replaces_it(harness: Harness) -> None:
    harness.backend.on_execute = Writes(harness.backend)
    first = await run(harness, "out.txt=one")
    (reported,) = first["files"]  # type: ignore[misc]
    container_id = str(first["container_id"])
    assert await harness.service.expire(container_id, reason="idle")
    assert await kept_version(harness, container_id, "/mnt/data/out.txt") == reported["file_id"]

    # The code changed the file after the call reported it: only the expiry keeps that version.
    await run(harness, "other.txt=x")
    (host,) = harness.backend.running.values()
    (host.data.path / "out.txt").write_text("two, unreported")
    assert await harness.service.expire(container_id, reason="idle")
    expiry_only = await kept_version(harness, container_id, "/mnt/data/out.txt")
    assert expiry_only != reported["file_id"] and await stored(harness, expiry_only)

    third = await run(harness, "out.txt=three")  # restored, then replaced by a reported version
    (newest,) = third["files"]  # type: ignore[misc]
    assert await kept_version(harness, container_id, "/mnt/data/out.txt") == newest["file_id"]
    assert not await stored(harness, expiry_only)  # superseded and named by nothing: collected
    assert await stored(harness, reported["file_id"])  # the first call's files still link to it
    assert await stored(harness, newest["file_id"])
    assert harness.blobs.used_bytes() == disk_bytes(harness.blobs)


async def test_a_listed_change_drops_a_version_only_an_expiry_kept(harness: Harness) -> None:
    harness.backend.on_execute = Writes(harness.backend)
    container_id = str((await run(harness, "a.txt=1"))["container_id"])
    (host,) = harness.backend.running.values()
    (host.data.path / "b.txt").write_text("expiry keeps this")
    assert await harness.service.expire(container_id, reason="idle")
    expiry_only = await kept_version(harness, container_id, "/mnt/data/b.txt")
    await run(harness, "c.txt=restore")
    (host,) = harness.backend.running.values()
    (host.data.path / "b.txt").write_text("changed, longer than before")
    record = await harness.service.get(OWNER, container_id)
    rows = {r.path: r for r in await harness.container_files.list_files(record)}
    assert rows["/mnt/data/b.txt"].file_id is None
    assert not await stored(harness, expiry_only)


async def test_an_uploaded_file_the_code_changed_is_never_deleted(harness: Harness) -> None:
    harness.backend.on_execute = Writes(harness.backend)
    upload = await harness.files.upload(OWNER, "in.csv", "assistants", chunks(b"a,b\n"))
    record, session, _ = await harness.service.thread_session(OWNER, "t")
    await harness.calls.wait(await harness.calls.start(OWNER, record, session, code="in.csv=changed",
                                                       file_ids=[upload.id], timeout=None))
    assert await kept_version(harness, record.id, "/mnt/data/in.csv") != upload.id
    assert await stored(harness, upload.id)


async def test_startup_sweeps_what_a_crash_left_half_written_and_counts_the_rest(tmp_path: Path) -> None:
    files = tmp_path / "data" / "files"
    (files / ".incoming").mkdir(parents=True)
    (files / ".incoming" / "0123456789abcdef").write_bytes(b"half an upload")
    (files / ".incoming" / "fedcba9876543210.part").write_bytes(b"half an export")
    (files / "file-kept").write_bytes(b"12345")
    # Another gateway sharing the file store is writing an upload: its scratch dir is not ours to sweep.
    (files / ".incoming" / "other-node").mkdir()
    (files / ".incoming" / "other-node" / "0123").write_bytes(b"an upload under way")
    gateway = Gateway(Settings(data_dir=tmp_path / "data", pool_size=0, node_name="this-node"),
                      backend=FakeBackend())
    (files / ".incoming" / "this-node").mkdir()
    (files / ".incoming" / "this-node" / "4567").write_bytes(b"half an upload of ours")
    await gateway.startup()
    try:
        assert sorted(p.name for p in (files / ".incoming").iterdir()) == ["other-node", "this-node"]
        assert list((files / ".incoming" / "this-node").iterdir()) == []
        assert (files / ".incoming" / "other-node" / "0123").read_bytes() == b"an upload under way"
        assert (files / "file-kept").read_bytes() == b"12345"
        assert "codeinterp_storage_bytes 5.0" in gateway.metrics.render().decode()
    finally:
        await gateway.shutdown()


async def test_the_stored_byte_count_follows_uploads_replacements_and_deletes(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "files")
    blobs.create()
    data = os.urandom((9 << 20) + 12345)  # more than two batches, in chunks that do not divide them
    size, sha = await blobs.save_stream("file-a", chunks(data, 65537), max_bytes=16 << 20)
    assert (size, sha) == (len(data), hashlib.sha256(data).hexdigest())
    assert blobs.path("file-a").read_bytes() == data
    await blobs.save_stream("file-b", chunks(b"small"), max_bytes=100)
    with pytest.raises(TooLarge):
        await blobs.save_stream("file-c", chunks(b"x" * 101), max_bytes=100)
    scratch = blobs.scratch()
    scratch.write_bytes(b"replaces b")
    blobs.adopt(scratch, "file-b")
    assert blobs.used_bytes() == disk_bytes(blobs) == len(data) + len(b"replaces b")
    blobs.delete("file-a")
    blobs.delete("file-a")  # twice: counted once
    assert blobs.used_bytes() == disk_bytes(blobs) == len(b"replaces b")
    assert list(blobs.tmp.iterdir()) == []
    again = BlobStore(tmp_path / "files")
    again.create()
    assert again.used_bytes() == len(b"replaces b")
