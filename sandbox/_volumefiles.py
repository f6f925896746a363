"""/mnt/data of a sandbox on another Docker engine: no directory on this machine, only Docker's API.

Bytes move through Docker's archive API (``put_archive``, ``get_archive``), which the engine runs
scoped to the container's own root: nothing there can reach the engine's host, however the sandbox
arranges its links. On top of that the same defences as ``DataDir`` apply here. A path is checked
component by component; only a regular file is served, and a symlink, hard link, FIFO, device or
directory is refused both by the engine's stat of the path and in the tar stream itself. Sizes are
capped before and while reading. Listing, hashing, deleting and reserving a new name run inside the
sandbox as its own user (``sandbox/_inside/files.py``). Their answers are the sandbox's word about
its own files: parsed with caps and never trusted for anything else.

The sandbox can swap a directory for a link between our check and the engine's copy. The copy then
reads or writes another file inside the same sandbox, which the code could have read or written
anyway. The engine's host and other sandboxes stay out of reach.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, BinaryIO

import docker.errors

from ._datadir import Snapshot, _split, _Stat, copy_capped, safe_name
from ._errors import ConfigError, FileError, FileNotFound, FileTooLarge, InvalidFileName, SandboxError, UnsafeFile
from ._inside import source
from ._results import FileInfo

__all__ = ["VolumeFiles", "data_volume_options", "keep_data"]

ROOT = "/mnt/data"
_PYTHON = "/opt/venv/bin/python"
_CHUNK = 1 << 20
_MAX_ANSWER = 64 << 20  # bytes of a helper's answer read at most (200,000 entries fit)
# Go's os.FileMode type bits, as Docker's path stat reports them.
_NOT_REGULAR = (1 << 31) | (1 << 27) | (1 << 26) | (1 << 25) | (1 << 24) | (1 << 21) | (1 << 19)
_SYMLINK = 1 << 27


def data_volume_options(mode: str, size: int, uid: int) -> dict[str, str]:
    """Docker ``local`` volume options for a remote sandbox's /mnt/data of at most ``size`` bytes.

    Docker offers two capped volumes: ``size`` on a plain volume, which needs project quotas on the
    engine's data root (xfs with pquota, or ext4 with prjquota; this machine's kernel has neither),
    and tmpfs, which works on every Linux engine. We take tmpfs, so that no engine is left without a
    cap. Its costs: the files are in RAM and count against the sandbox's memory limit (the kernel
    charges tmpfs pages to the cgroup that writes them), and they do not outlive the container's
    own stop, so ``restart`` carries them across (``keep_data``) while a kernel that died on its own
    takes them with it. ``off`` gives a plain volume on the engine's disk with no cap.
    """
    if mode == "off":
        return {}
    if mode not in ("auto", "loop"):
        raise ConfigError(f"data_quota {mode!r} is not one of auto, loop, off")
    return {"type": "tmpfs", "device": "tmpfs",
            "o": f"size={size},uid={uid},gid={uid},mode=0755,nosuid,nodev,noexec"}


@contextmanager
def keep_data(api: Any, container: str, *, enabled: bool) -> Iterator[None]:
    """Copy /mnt/data out before the body (a container restart) and back in after it, when it runs."""
    if not enabled or not api.inspect_container(container)["State"].get("Running"):
        yield
        return
    with tempfile.TemporaryFile() as saved:
        chunks, _ = api.get_archive(container, f"{ROOT}/.", chunk_size=_CHUNK)
        for chunk in chunks:  # at most the tmpfs's size: the engine packs what is there
            saved.write(chunk)
        yield
        saved.seek(0)
        api.put_archive(container, ROOT, saved)


class _Chunks(io.RawIOBase):
    """A file-like view of Docker's chunk iterator, for ``tarfile``'s stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks, self._pending = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


class VolumeFiles:
    """File operations on one engine's sandboxes, through its low-level API client."""

    def __init__(self, client: Callable[[], Any], run_exec: Callable[[str, int], tuple[bytes, bytes]], uid: int,
                 *, max_entries: int = 200_000) -> None:
        self._client, self._run_exec, self.uid, self.max_entries = client, run_exec, uid, max_entries

    @property
    def api(self) -> Any:
        return self._client().api

    # -- the helper inside the sandbox ---------------------------------------------------

    def _helper(self, container: str, *args: str) -> Any:
        # -S: the helper needs only the standard library, and the image's site-packages (.pth files
        # and all) would double the start of every call's listing.
        created = self.api.exec_create(container, [_PYTHON, "-I", "-S", "-c", source("files"), args[0], ROOT,
                                                   *args[1:]],
                                       stdout=True, stderr=True, user=f"{self.uid}:{self.uid}", workdir="/",
                                       environment={"LANG": "C.UTF-8"})
        try:
            out, err = self._run_exec(created["Id"], _MAX_ANSWER)
        except OverflowError as exc:
            raise SandboxError("the sandbox's file listing is too large to read") from exc
        except OSError as exc:
            # The helper runs as the sandbox's user, so the code may stop or slow it: the sandbox's
            # doing, not the engine's, so nothing here counts towards draining the engine.
            raise SandboxError(f"the sandbox's file helper did not answer ({exc}); try the call again") from exc
        code = self.api.exec_inspect(created["Id"]).get("ExitCode")
        if code == 2:
            raise FileNotFound(f"no file {args[-1]!r} in /mnt/data")
        if code == 3:
            raise UnsafeFile(f"/mnt/data/{args[-1]} is not a regular file, or has a symlink on its way")
        if code == 4:
            raise InvalidFileName("too many files with that name; pick another name")
        if code != 0:
            raise SandboxError(f"a file chore in the sandbox failed ({code}): {err.decode(errors='replace')[:300]}")
        try:
            return json.loads(out)
        except ValueError as exc:
            raise SandboxError("the sandbox's file helper answered nonsense") from exc

    def snapshot(self, container: str) -> Snapshot:
        answer = self._helper(container, "list", str(self.max_entries))
        found: Snapshot = {}
        for entry in answer if isinstance(answer, list) else []:
            try:
                rel, size, mtime, ino, ctime = entry
                if not isinstance(rel, str) or "/".join(_split(rel)) != rel:
                    continue
                found[rel] = _Stat(int(size), int(mtime), int(ino), int(ctime))
            except (TypeError, ValueError, FileNotFound):
                continue  # not what our helper prints: skip it
            if len(found) >= self.max_entries:
                break
        return found

    def digests(self, container: str, paths: list[str], max_bytes: int) -> dict[str, str | None]:
        if not paths or max_bytes <= 0:
            return {}
        answer = self._helper(container, "hash", str(max_bytes), json.dumps(paths))
        return {p: answer.get(p) if isinstance(answer.get(p), str) else None for p in paths} \
            if isinstance(answer, dict) else {}

    def delete(self, container: str, path: str) -> None:
        self._helper(container, "delete", "/".join(_split(path)))

    # -- bytes, through the archive API -----------------------------------------------------

    def _stat(self, container: str, path: str) -> dict[str, Any] | None:
        response = self.api.head(self.api._url("/containers/{0}/archive", container), params={"path": path},
                                 timeout=self.api.timeout)
        if response.status_code == 404:
            return None
        self.api._raise_for_status(response)
        header = response.headers.get("X-Docker-Container-Path-Stat", "")
        return dict(json.loads(base64.b64decode(header))) if header else None

    def _check_parents(self, container: str, parts: list[str]) -> None:
        for depth in range(1, len(parts)):
            found = self._stat(container, f"{ROOT}/{'/'.join(parts[:depth])}")
            if found is None:
                raise FileNotFound(f"no file {'/'.join(parts)!r} in /mnt/data")
            if int(found.get("mode", 0)) & _SYMLINK or not int(found.get("mode", 0)) & (1 << 31):
                raise UnsafeFile(f"/mnt/data/{'/'.join(parts[:depth])} is not a directory; it is not followed")

    def _open(self, container: str, relpath: str,
              max_bytes: int | None) -> tuple[tarfile.TarFile, IO[bytes], int, float]:
        parts = _split(relpath)
        self._check_parents(container, parts)
        path = f"{ROOT}/{'/'.join(parts)}"
        found = self._stat(container, path)
        if found is None:
            raise FileNotFound(f"no file {relpath!r} in /mnt/data")
        if int(found.get("mode", 0)) & _NOT_REGULAR:
            raise UnsafeFile(f"/mnt/data/{relpath} is not a regular file; it is not served")
        if max_bytes is not None and int(found.get("size", 0)) > max_bytes:
            raise FileTooLarge(f"/mnt/data/{relpath} is {found.get('size')} bytes, over the {max_bytes} cap")
        try:
            chunks, _ = self.api.get_archive(container, path, chunk_size=_CHUNK)
        except docker.errors.NotFound as exc:
            raise FileNotFound(f"no file {relpath!r} in /mnt/data") from exc
        # Stream mode: members are read as they arrive, never the whole archive first. Closed by the caller.
        try:
            archive = tarfile.open(fileobj=io.BufferedReader(_Chunks(iter(chunks)), _CHUNK), mode="r|")  # noqa: SIM115
            member = archive.next()
        except (tarfile.TarError, EOFError) as exc:
            raise FileError(f"/mnt/data/{relpath} changed while it was read; read it again") from exc
        # The stream holds what the engine found at that moment: check it again, not the stat.
        if member is None or member.name != parts[-1] or not member.isreg():
            archive.close()
            raise UnsafeFile(f"/mnt/data/{relpath} is not a regular file; it is not served")
        if max_bytes is not None and member.size > max_bytes:
            archive.close()
            raise FileTooLarge(f"/mnt/data/{relpath} grew past the {max_bytes} byte cap")
        handle = archive.extractfile(member)
        assert handle is not None
        return archive, handle, member.size, float(member.mtime)

    def read(self, container: str, relpath: str, max_bytes: int | None) -> bytes:
        archive, handle, size, _ = self._open(container, relpath, max_bytes)
        with archive:
            try:
                return handle.read(size)
            except (tarfile.TarError, EOFError) as exc:  # the engine cut the stream: the file changed
                raise FileError(f"/mnt/data/{relpath} changed while it was read; read it again") from exc

    def export(self, container: str, relpath: str, dest: Path, max_bytes: int | None) -> FileInfo:
        """Copy to ``dest`` (written whole or not at all), hashing on the way."""
        archive, handle, size, mtime = self._open(container, relpath, max_bytes)
        tmp = dest.with_name(dest.name + ".part")
        digest = hashlib.sha256()
        try:
            with archive, open(tmp, "wb") as out:
                for chunk in iter(lambda: handle.read(_CHUNK), b""):
                    digest.update(chunk)
                    out.write(chunk)
        except (tarfile.TarError, EOFError) as exc:  # the engine cut the stream: the file changed
            tmp.unlink(missing_ok=True)
            raise FileError(f"/mnt/data/{relpath} changed while it was read; read it again") from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(dest)
        return FileInfo(path="/".join(_split(relpath)), size=size, mtime=mtime, sha256=digest.hexdigest())

    def write(self, container: str, name: str, data: bytes | BinaryIO, *, max_bytes: int | None,
              parents: bool) -> FileInfo:
        """Create a new file; a clashing name gets a numbered suffix (chosen inside), never an overwrite."""
        dirs = _split(name)[:-1] if parents else []
        for part in dirs:
            safe_name(part, strict=True)
        base = safe_name(name)
        with tempfile.TemporaryFile() as body:
            digest, size = copy_capped(data, body, name=base, max_bytes=max_bytes)
            rel = self._helper(container, "reserve", json.dumps([*dirs, base]))
            if not isinstance(rel, str) or _split(rel)[:-1] != dirs:
                raise SandboxError("the sandbox's file helper answered nonsense")
            final = _split(rel)[-1]
            body.seek(0)
            with tempfile.TemporaryFile() as tar_file:
                with tarfile.open(fileobj=tar_file, mode="w") as archive:
                    info = tarfile.TarInfo(final)
                    info.size, info.mode, info.mtime = size, 0o644, int(time.time())
                    info.uid = info.gid = self.uid
                    archive.addfile(info, body)
                tar_file.seek(0)
                try:
                    self.api.put_archive(container, "/".join([ROOT, *dirs]), tar_file)
                except docker.errors.APIError as exc:
                    with contextlib.suppress(SandboxError, docker.errors.DockerException):
                        self.delete(container, rel)  # the empty file that held the name
                    if "no space left" in str(exc).lower():
                        raise FileTooLarge(f"{base} does not fit in /mnt/data's quota") from exc
                    raise
        return FileInfo(path=rel, size=size, mtime=time.time(), sha256=digest.hexdigest())
