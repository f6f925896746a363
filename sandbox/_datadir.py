"""The host side of a session's /mnt/data, which the kernel controls.

The host must not trust this directory: the code can plant symlinks, FIFOs,
devices and deep trees, and swap them while we look. So every path is walked
one component at a time with ``O_NOFOLLOW`` relative to a directory fd, only
regular files are ever opened, and opening never blocks (``O_NONBLOCK``).
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import os
import stat
import threading
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ._errors import FileNotFound, FileTooLarge, InvalidFileName, UnsafeFile
from ._results import FileInfo

__all__ = ["DataDir", "Snapshot", "copy_capped", "safe_name"]

_MAX_NAME_BYTES = 255
_MAX_DEPTH = 16
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CHUNK = 1 << 20
# Characters that look like / or \ without folding to them under NFKC (which catches the fullwidth
# and small forms): a name holding one could read as a path to a person or to a later tool.
_SEPARATOR_LOOKALIKES = frozenset("\u2044\u2215\u2216\u2571\u2572\u29f8\u29f9\u3033")


def _is_separator(ch: str) -> bool:
    return ch in "/\\" or ch in _SEPARATOR_LOOKALIKES or unicodedata.normalize("NFKC", ch) in ("/", "\\")


def safe_name(name: str, *, strict: bool = False) -> str:
    """A base name that is safe to create in /mnt/data.

    With ``strict`` a name that would need changing raises ``InvalidFileName``;
    otherwise path parts are dropped and control characters removed.
    """
    if not isinstance(name, str):
        raise InvalidFileName("a file name must be a string")
    cleaned = unicodedata.normalize("NFC", name)
    base = "".join("/" if _is_separator(ch) else ch for ch in cleaned).rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C").strip()
    if strict and base != name:
        raise InvalidFileName(
            f"file name {name!r} has path separators (or look-alikes of them) or control characters; "
            "send a plain base name"
        )
    folded = unicodedata.normalize("NFKC", base)  # so that a fullwidth or leader-dot ".." counts too
    if folded in ("", ".", "..") or folded.startswith(".."):
        raise InvalidFileName(f"file name {name!r} is not usable; send a plain base name such as data.csv")
    if len(base.encode()) > _MAX_NAME_BYTES:
        raise InvalidFileName(f"file name is longer than {_MAX_NAME_BYTES} bytes; shorten it")
    return base


def _split(relpath: str) -> list[str]:
    rel = relpath.removeprefix("/mnt/data/").strip("/")
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." or "\0" in p for p in parts) or len(parts) > _MAX_DEPTH:
        raise FileNotFound(f"no file {relpath!r} in /mnt/data")
    return parts


@dataclass(frozen=True)
class _Stat:
    size: int
    mtime_ns: int
    ino: int
    ctime_ns: int


Snapshot = dict[str, _Stat]



def copy_capped(source: bytes | BinaryIO, out: BinaryIO, *, name: str,
                max_bytes: int | None) -> tuple[hashlib._Hash, int]:
    """Copy ``source`` to ``out`` in chunks, hashing; FileTooLarge as soon as it passes ``max_bytes``."""
    digest, size = hashlib.sha256(), 0
    chunks = [source] if isinstance(source, bytes) else iter(lambda: source.read(_CHUNK), b"")
    for chunk in chunks:
        size += len(chunk)
        if max_bytes is not None and size > max_bytes:
            raise FileTooLarge(f"{name} is larger than {max_bytes} bytes")
        digest.update(chunk)
        out.write(chunk)
    return digest, size

class DataDir:
    """Safe operations on one session's /mnt/data as seen from the host."""

    def __init__(self, path: Path, *, uid: int | None = None, max_entries: int = 200_000) -> None:
        self.path = path
        self.uid = uid
        self.max_entries = max_entries
        # The walk that ended the last execution is the next one's "before": one walk per execution,
        # not two. What the code changes between executions is then reported by the next one (before,
        # it was never reported). Our own writes and deletes drop it; the generation tells a walk
        # that raced with one of them not to become the baseline.
        self._baseline: Snapshot | None = None
        self._generation = 0
        self._guard = threading.Lock()

    def baseline(self) -> Snapshot | None:
        """The snapshot taken by the last ``changed``, unless this host changed the directory since."""
        return self._baseline

    def _touched(self) -> None:
        with self._guard:
            self._generation += 1
            self._baseline = None

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o755)
        if self.uid is not None and os.geteuid() == 0:
            os.chown(self.path, self.uid, self.uid)

    @contextmanager
    def _root(self) -> Iterator[int]:
        fd = os.open(self.path, _DIR_FLAGS)
        try:
            yield fd
        finally:
            os.close(fd)

    @contextmanager
    def _parent(self, parts: list[str]) -> Iterator[int]:
        """A directory fd for all but the last component, never leaving the root."""
        fds: list[int] = []
        try:
            fd = os.open(self.path, _DIR_FLAGS)
            fds.append(fd)
            for part in parts[:-1]:
                try:
                    fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    raise FileNotFound(f"no file {'/'.join(parts)!r} in /mnt/data") from exc
                fds.append(fd)
            yield fd
        finally:
            for item in fds:
                os.close(item)

    # -- writing ------------------------------------------------------------

    @contextmanager
    def _made_dirs(self, parts: list[str]) -> Iterator[int]:
        """A directory fd for ``parts`` under the root, creating them; a planted symlink is refused."""
        fds: list[int] = []
        try:
            fds.append(os.open(self.path, _DIR_FLAGS))
            for part in parts:
                try:
                    os.mkdir(safe_name(part, strict=True), 0o755, dir_fd=fds[-1])
                    if self.uid is not None and os.geteuid() == 0:
                        os.chown(part, self.uid, self.uid, dir_fd=fds[-1], follow_symlinks=False)
                except FileExistsError:
                    pass
                try:
                    fds.append(os.open(part, _DIR_FLAGS, dir_fd=fds[-1]))
                except OSError as exc:
                    raise UnsafeFile(f"/mnt/data/{'/'.join(parts)} is not a directory it can write into") from exc
            yield fds[-1]
        finally:
            for item in fds:
                os.close(item)

    def write(self, name: str, source: bytes | BinaryIO, *, max_bytes: int | None = None,
              parents: bool = False) -> FileInfo:
        """Create a new file; a clashing name gets a numbered suffix, never an overwrite.

        With ``parents`` the name may be a relative path whose directories are created.
        """
        try:
            return self._write(name, source, max_bytes=max_bytes, parents=parents)
        finally:
            self._touched()

    def _write(self, name: str, source: bytes | BinaryIO, *, max_bytes: int | None, parents: bool) -> FileInfo:
        dirs = _split(name)[:-1] if parents else []
        base = safe_name(name)
        stem, dot, ext = base.rpartition(".")
        if not stem:
            stem, dot, ext = base, "", ""
        with self._made_dirs(dirs) as root:
            for n in range(10_000):
                candidate = base if n == 0 else f"{stem}-{n}{dot}{ext}"
                try:
                    # O_EXCL also refuses a symlink or FIFO the code planted at this name.
                    fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                                 | os.O_CLOEXEC, 0o644, dir_fd=root)
                except FileExistsError:
                    continue
                break
            else:
                raise InvalidFileName(f"too many files named like {base!r}; pick another name")
            try:
                with os.fdopen(fd, "wb", closefd=False) as out:
                    digest, size = copy_capped(source, out, name=base, max_bytes=max_bytes)
                if self.uid is not None and os.geteuid() == 0:
                    os.fchown(fd, self.uid, self.uid)
                st = os.fstat(fd)
            except BaseException:
                os.unlink(candidate, dir_fd=root)
                raise
            finally:
                os.close(fd)
        return FileInfo(path="/".join([*dirs, candidate]), size=size, mtime=st.st_mtime_ns / 1e9,
                        sha256=digest.hexdigest())

    # -- reading ------------------------------------------------------------

    @contextmanager
    def open(self, relpath: str) -> Iterator[BinaryIO]:
        """Open a regular file for reading; anything else raises."""
        parts = _split(relpath)
        with self._parent(parts) as parent:
            try:
                fd = os.open(parts[-1], _READ_FLAGS, dir_fd=parent)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise UnsafeFile(f"/mnt/data/{relpath} is a symlink; it is not served") from exc
                raise FileNotFound(f"no file {relpath!r} in /mnt/data") from exc
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise UnsafeFile(f"/mnt/data/{relpath} is not a regular file; it is not served")
        # Drop O_NONBLOCK now that we know it is a regular file.
        os.set_blocking(fd, True)
        handle = os.fdopen(fd, "rb")
        try:
            yield handle
        finally:
            handle.close()

    def read(self, relpath: str, *, max_bytes: int | None = None) -> bytes:
        with self.open(relpath) as handle:
            size = os.fstat(handle.fileno()).st_size
            if max_bytes is not None and size > max_bytes:
                raise FileTooLarge(f"/mnt/data/{relpath} is {size} bytes, over the {max_bytes} cap")
            data = handle.read(max_bytes + 1 if max_bytes is not None else -1)
            if max_bytes is not None and len(data) > max_bytes:
                raise FileTooLarge(f"/mnt/data/{relpath} grew past the {max_bytes} byte cap")
            return data

    def export(self, relpath: str, dest: Path, *, max_bytes: int | None = None) -> FileInfo:
        """Copy to ``dest`` (written whole or not at all), hashing on the way."""
        tmp = dest.with_name(dest.name + ".part")
        digest, size = hashlib.sha256(), 0
        with self.open(relpath) as handle, open(tmp, "wb") as out:
            mtime = os.fstat(handle.fileno()).st_mtime_ns / 1e9
            try:
                for chunk in iter(lambda: handle.read(_CHUNK), b""):
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise FileTooLarge(f"/mnt/data/{relpath} is over the {max_bytes} byte cap")
                    digest.update(chunk)
                    out.write(chunk)
            except BaseException:
                out.close()
                tmp.unlink(missing_ok=True)
                raise
        tmp.replace(dest)
        return FileInfo(path="/".join(_split(relpath)), size=size, mtime=mtime, sha256=digest.hexdigest())

    def info(self, relpath: str, *, digest: bool = False, max_digest_bytes: int | None = None) -> FileInfo:
        with self.open(relpath) as handle:
            st = os.fstat(handle.fileno())
            sha = None
            if digest and (max_digest_bytes is None or st.st_size <= max_digest_bytes):
                hasher = hashlib.sha256()
                for chunk in iter(lambda: handle.read(_CHUNK), b""):
                    hasher.update(chunk)
                sha = hasher.hexdigest()
        return FileInfo(path="/".join(_split(relpath)), size=st.st_size, mtime=st.st_mtime_ns / 1e9, sha256=sha)

    def delete(self, relpath: str) -> None:
        """Remove one file; a symlink is removed itself, never its target."""
        try:
            self._delete(relpath)
        finally:
            self._touched()

    def _delete(self, relpath: str) -> None:
        parts = _split(relpath)
        with self._parent(parts) as parent:
            try:
                st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
            except OSError as exc:
                raise FileNotFound(f"no file {relpath!r} in /mnt/data") from exc
            if stat.S_ISDIR(st.st_mode):
                raise UnsafeFile(f"/mnt/data/{relpath} is a directory; delete files one by one")
            try:
                os.unlink(parts[-1], dir_fd=parent)
            except FileNotFoundError as exc:
                raise FileNotFound(f"no file {relpath!r} in /mnt/data") from exc

    # -- listing ------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """Regular files under the root, by relative path; bounded in depth and count."""
        found: Snapshot = {}
        try:
            root = os.open(self.path, _DIR_FLAGS)
        except FileNotFoundError:
            return found
        self._walk(root, "", 0, found, None)
        return found

    def unchanged_since(self, before: Snapshot, *, budget: int) -> bool:
        """True when the tree has at most ``budget`` entries (of any kind: cheap enough to walk on an
        event loop) and its files are exactly ``before``; then that is the baseline again."""
        generation = self._generation
        found: Snapshot = {}
        try:
            root = os.open(self.path, _DIR_FLAGS)
        except FileNotFoundError:
            return not before
        if not self._walk(root, "", 0, found, [budget]) or found != before:
            return False
        with self._guard:
            if self._generation == generation:
                self._baseline = found
        return True

    def _walk(self, fd: int, prefix: str, depth: int, found: Snapshot, budget: builtins.list[int] | None) -> bool:
        """Add the regular files under ``fd`` to ``found``; False if it ran out of ``budget`` entries."""
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    if len(found) >= self.max_entries:
                        return True
                    if budget is not None:
                        budget[0] -= 1
                        if budget[0] < 0:
                            return False
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    rel = prefix + entry.name
                    if stat.S_ISREG(st.st_mode):
                        found[rel] = _Stat(st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
                    elif stat.S_ISDIR(st.st_mode) and depth + 1 < _MAX_DEPTH:
                        try:
                            child = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)
                        except OSError:
                            continue
                        if not self._walk(child, rel + "/", depth + 1, found, budget):
                            return False
        finally:
            os.close(fd)
        return True

    def list(self) -> list[FileInfo]:
        snap = self.snapshot()
        return [FileInfo(path=p, size=s.size, mtime=s.mtime_ns / 1e9) for p, s in sorted(snap.items())]

    def changed(self, before: Snapshot, *, limit: int,
                max_digest_bytes: int) -> tuple[builtins.list[FileInfo], bool]:
        """Files new or changed since ``before``, newest first, at most ``limit``; what it saw becomes
        the ``baseline``."""
        generation = self._generation
        after = self.snapshot()
        with self._guard:
            if self._generation == generation:
                self._baseline = after
        changed = [(p, s) for p, s in after.items() if before.get(p) != s]
        changed.sort(key=lambda item: (-item[1].mtime_ns, item[0]))
        infos: builtins.list[FileInfo] = []
        for rel, _ in changed[:limit]:
            try:
                infos.append(self.info(rel, digest=True, max_digest_bytes=max_digest_bytes))
            except (FileNotFound, UnsafeFile):
                continue  # replaced or removed since the walk
        return infos, len(changed) > limit
