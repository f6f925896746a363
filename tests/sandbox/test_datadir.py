"""DataDir and safe_name: the host side of /mnt/data, which the sandboxed code controls."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from sandbox import FileNotFound, FileTooLarge, InvalidFileName, UnsafeFile, safe_name
from sandbox._datadir import DataDir


@pytest.fixture
def data(tmp_path: Path) -> DataDir:
    data = DataDir(tmp_path / "data")
    data.create()
    return data


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file outside the data dir that nothing may touch."""
    path = tmp_path / "outside.txt"
    path.write_bytes(b"outside, untouched")
    return path


# -- safe_name ------------------------------------------------------------------------


def test_safe_name_drops_path_parts():
    assert safe_name("../../x") == "x"
    assert safe_name("dir\\sub\\report.csv") == "report.csv"


def test_safe_name_strict_refuses_path_parts():
    with pytest.raises(InvalidFileName):
        safe_name("../../x", strict=True)


def test_safe_name_strict_accepts_a_plain_name():
    assert safe_name("sales 2024.csv", strict=True) == "sales 2024.csv"


def test_safe_name_removes_control_characters():
    assert safe_name("a\x00b\nc.csv") == "abc.csv"


@pytest.mark.parametrize("name", ["..", ".", "", "  ", "a/..", "..hidden"])
def test_safe_name_refuses_unusable_names(name):
    with pytest.raises(InvalidFileName):
        safe_name(name)


def test_safe_name_refuses_overlong_names():
    with pytest.raises(InvalidFileName):
        safe_name("a" * 300)


# -- write -------------------------------------------------------------------------------


def test_write_reports_size_and_sha256(data):
    info = data.write("a.csv", b"x,y\n1,2\n")
    assert info.path == "a.csv"
    assert info.size == 8
    assert info.sha256 == hashlib.sha256(b"x,y\n1,2\n").hexdigest()
    assert (data.path / "a.csv").read_bytes() == b"x,y\n1,2\n"


def test_write_with_path_parts_stays_inside(data, tmp_path):
    info = data.write("../../evil.txt", b"evil")
    assert info.path == "evil.txt"
    assert (data.path / "evil.txt").read_bytes() == b"evil"
    assert not (tmp_path / "evil.txt").exists()


def test_write_never_writes_through_a_planted_symlink(data, outside):
    os.symlink(outside, data.path / "a.csv")
    info = data.write("a.csv", b"new content")
    assert outside.read_bytes() == b"outside, untouched"
    assert info.path == "a-1.csv"
    assert (data.path / "a-1.csv").read_bytes() == b"new content"
    assert (data.path / "a.csv").is_symlink()


def test_write_never_creates_the_target_of_a_dangling_symlink(data, tmp_path):
    target = tmp_path / "created-outside.txt"
    os.symlink(target, data.path / "a.csv")
    info = data.write("a.csv", b"new content")
    assert not target.exists()
    assert info.path == "a-1.csv"


def test_write_over_the_cap_leaves_no_file(data):
    with pytest.raises(FileTooLarge):
        data.write("big.bin", b"x" * 11, max_bytes=10)
    assert list(data.path.iterdir()) == []


# -- read ---------------------------------------------------------------------------------


def test_read_returns_the_bytes(data):
    (data.path / "f.bin").write_bytes(b"\x00\x01payload")
    assert data.read("f.bin") == b"\x00\x01payload"
    assert data.read("/mnt/data/f.bin") == b"\x00\x01payload"


def test_read_of_a_symlink_is_unsafe(data, outside):
    os.symlink(outside, data.path / "link")
    with pytest.raises(UnsafeFile):
        data.read("link")


def test_read_through_a_symlinked_directory_is_refused(data, tmp_path):
    secret_dir = tmp_path / "secrets"
    secret_dir.mkdir()
    (secret_dir / "key.txt").write_bytes(b"secret")
    os.symlink(secret_dir, data.path / "d")
    with pytest.raises((FileNotFound, UnsafeFile)):
        data.read("d/key.txt")


def test_read_with_dot_dot_is_refused(data, outside):
    with pytest.raises(FileNotFound):
        data.read("../outside.txt")


def test_read_of_a_fifo_is_unsafe_and_does_not_block(data):
    os.mkfifo(data.path / "pipe")
    outcome: list[BaseException | bytes] = []

    def read() -> None:
        try:
            outcome.append(data.read("pipe"))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "reading a FIFO blocked"
    assert len(outcome) == 1 and isinstance(outcome[0], UnsafeFile)


def test_read_of_a_directory_is_unsafe(data):
    (data.path / "sub").mkdir()
    with pytest.raises(UnsafeFile):
        data.read("sub")


def test_read_over_the_cap_is_too_large(data):
    (data.path / "big.bin").write_bytes(b"x" * 11)
    with pytest.raises(FileTooLarge):
        data.read("big.bin", max_bytes=10)


# -- delete -------------------------------------------------------------------------------


def test_delete_of_a_symlink_removes_the_link_not_the_target(data, outside):
    os.symlink(outside, data.path / "link")
    data.delete("link")
    assert not os.path.lexists(data.path / "link")
    assert outside.read_bytes() == b"outside, untouched"


def test_delete_of_a_missing_file_is_not_found(data):
    with pytest.raises(FileNotFound):
        data.delete("nope.txt")


# -- snapshot and changes --------------------------------------------------------------------


def test_changed_reports_new_and_modified_files_but_not_symlinks(data, outside):
    (data.path / "same.txt").write_bytes(b"unchanged")
    (data.path / "edit.txt").write_bytes(b"v1")
    before = data.snapshot()
    (data.path / "edit.txt").write_bytes(b"version 2")
    (data.path / "sub").mkdir()
    (data.path / "sub" / "new.txt").write_bytes(b"new")
    os.symlink(outside, data.path / "link")
    changed, truncated = data.changed(before, limit=100, max_digest_bytes=1 << 20)
    assert not truncated
    assert sorted(f.path for f in changed) == ["edit.txt", "sub/new.txt"]
    by_path = {f.path: f for f in changed}
    assert by_path["edit.txt"].size == len(b"version 2")
    assert by_path["edit.txt"].sha256 == hashlib.sha256(b"version 2").hexdigest()


def test_the_walk_that_ends_an_execution_is_the_next_ones_baseline(data):
    assert data.baseline() is None  # nothing walked yet: the session walks
    (data.path / "a.txt").write_bytes(b"a")
    data.changed(data.snapshot(), limit=100, max_digest_bytes=1 << 20)
    assert set(data.baseline() or {}) == {"a.txt"}
    (data.path / "later.txt").write_bytes(b"written between two executions")
    changed, _ = data.changed(data.baseline() or {}, limit=100, max_digest_bytes=1 << 20)
    assert [f.path for f in changed] == ["later.txt"]


def test_our_own_writes_and_deletes_drop_the_baseline(data):
    data.changed({}, limit=100, max_digest_bytes=1 << 20)
    assert data.baseline() == {}
    data.write("upload.csv", b"from the user")
    assert data.baseline() is None, "an uploaded file must not look like one the code made"
    data.changed(data.snapshot(), limit=100, max_digest_bytes=1 << 20)
    assert data.baseline() is not None
    data.delete("upload.csv")
    assert data.baseline() is None


def test_a_walk_that_raced_with_our_write_does_not_become_the_baseline(data, monkeypatch):
    real_snapshot = data.snapshot

    def snapshot_then_upload():
        seen = real_snapshot()
        data.write("during.csv", b"placed while the walk ran")
        return seen

    monkeypatch.setattr(data, "snapshot", snapshot_then_upload)
    data.changed({}, limit=100, max_digest_bytes=1 << 20)
    assert data.baseline() is None


def test_an_unchanged_small_tree_is_confirmed_without_a_full_walk(data):
    (data.path / "a.txt").write_bytes(b"a")
    before = data.snapshot()
    assert data.unchanged_since(before, budget=8)
    assert data.baseline() == before
    (data.path / "a.txt").write_bytes(b"changed")
    assert not data.unchanged_since(before, budget=8)


def test_a_tree_over_the_budget_is_never_confirmed_on_the_loop(data):
    for n in range(10):
        (data.path / f"empty-{n}").mkdir()  # directories count against the budget too
    before = data.snapshot()
    assert before == {}
    assert not data.unchanged_since(before, budget=8)
    assert data.unchanged_since(before, budget=16)


def test_snapshot_and_list_ignore_symlinks_and_fifos(data, outside):
    (data.path / "real.txt").write_bytes(b"real")
    os.symlink(outside, data.path / "link")
    os.mkfifo(data.path / "pipe")
    assert set(data.snapshot()) == {"real.txt"}
    assert [f.path for f in data.list()] == ["real.txt"]


def test_changed_is_capped_at_the_limit(data):
    before = data.snapshot()
    for n in range(5):
        (data.path / f"f{n}.txt").write_bytes(b"x")
    changed, truncated = data.changed(before, limit=3, max_digest_bytes=1 << 20)
    assert truncated
    assert len(changed) == 3


def test_changed_does_not_hash_files_over_the_digest_cap(data):
    before = data.snapshot()
    (data.path / "big.bin").write_bytes(b"x" * 100)
    changed, _ = data.changed(before, limit=10, max_digest_bytes=10)
    assert [(f.path, f.size, f.sha256) for f in changed] == [("big.bin", 100, None)]


# -- export ------------------------------------------------------------------------------------


def test_export_copies_bytes_and_sha256(data, tmp_path):
    payload = os.urandom(3 << 20)
    (data.path / "f.bin").write_bytes(payload)
    dest = tmp_path / "exported.bin"
    info = data.export("f.bin", dest)
    assert dest.read_bytes() == payload
    assert info.path == "f.bin"
    assert info.size == len(payload)
    assert info.sha256 == hashlib.sha256(payload).hexdigest()
    assert not (tmp_path / "exported.bin.part").exists()


def test_export_of_a_symlink_writes_nothing(data, outside, tmp_path):
    os.symlink(outside, data.path / "link")
    dest = tmp_path / "exported.txt"
    with pytest.raises(UnsafeFile):
        data.export("link", dest)
    assert not dest.exists()
    assert not (tmp_path / "exported.txt.part").exists()


def test_export_over_the_cap_writes_nothing(data, tmp_path):
    (data.path / "big.bin").write_bytes(b"x" * 100)
    dest = tmp_path / "exported.bin"
    with pytest.raises(FileTooLarge):
        data.export("big.bin", dest, max_bytes=10)
    assert not dest.exists()
    assert not (tmp_path / "exported.bin.part").exists()


def test_every_view_of_a_file_gives_the_same_mtime(data: DataDir, tmp_path: Path) -> None:
    # A file's mtime tells the gateway whether it holds that version already: one float, whatever read it.
    data.write("f.txt", b"x")
    ns = 1_700_000_000_123_456_838  # st_mtime rounds this one differently from st_mtime_ns / 1e9
    os.utime(data.path / "f.txt", ns=(ns, ns))
    (listed,) = data.list()
    assert listed.mtime == data.info("f.txt").mtime == data.export("f.txt", tmp_path / "copy").mtime
