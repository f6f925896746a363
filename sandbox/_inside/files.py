"""File chores inside a sandbox whose /mnt/data is not on the gateway's machine (a remote engine).

Run as the sandbox's user: ``python -I -S -c <this source> COMMAND ROOT ARGS...`` (standard library
only). The bytes of files move through Docker's archive API; this only lists, hashes, deletes and
reserves names, walking one component at a time with O_NOFOLLOW as ``sandbox/_datadir.py`` does on
the host. Its answer comes
from inside the sandbox, so the gateway treats it as the sandbox's word: checked, capped, and never
used to reach anything outside the sandbox.

    list ROOT MAX_ENTRIES          -> JSON [[path, size, mtime_ns, ino, ctime_ns], ...] of regular files
    hash ROOT MAX_BYTES PATHS      -> JSON {path: sha256 or null}; PATHS is a JSON list
    reserve ROOT PARTS             -> the relative path of a new empty file; PARTS is a JSON list
    delete ROOT PATH               -> nothing
Exit status 2: no such file; 3: not a regular file (or a symlink on the way); 4: no free name.
"""

import errno
import hashlib
import json
import os
import stat
import sys
from typing import Any

DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
MAX_DEPTH = 16


def walk(fd: int, prefix: str, depth: int, found: list[list[Any]], limit: int) -> None:
    with os.scandir(fd) as entries:
        for entry in entries:
            if len(found) >= limit:
                return
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            rel = prefix + entry.name
            if stat.S_ISREG(st.st_mode):
                found.append([rel, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns])
            elif stat.S_ISDIR(st.st_mode) and depth + 1 < MAX_DEPTH:
                try:
                    child = open_dir(entry.name, fd)
                except OSError:
                    continue
                try:
                    walk(child, rel + "/", depth + 1, found, limit)
                finally:
                    os.close(child)


def parent(root: str, parts: list[str], make: bool = False) -> int:
    fd = os.open(root, DIR)
    for part in parts:
        if make:
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
        try:
            child = open_dir(part, fd)
        except OSError as exc:
            os.close(fd)
            sys.exit(3 if exc.errno in (errno.ELOOP, errno.ENOTDIR) else 2)
        os.close(fd)
        fd = child
    return fd


def open_dir(name: str, fd: int) -> int:
    """Open a directory entry that is a real directory, never a symlink's target.

    O_NOFOLLOW alone is not enough: gVisor 20221219 follows a symlink opened with O_DIRECTORY |
    O_NOFOLLOW. So the entry is lstat'ed first and the opened directory must be that very inode.
    """
    before = os.stat(name, dir_fd=fd, follow_symlinks=False)
    if not stat.S_ISDIR(before.st_mode):
        raise OSError(errno.ENOTDIR, "not a directory", name)
    child = os.open(name, DIR, dir_fd=fd)
    after = os.fstat(child)
    if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
        os.close(child)
        raise OSError(errno.ELOOP, "swapped for another entry while opened", name)
    return child


def digest(root: str, path: str, max_bytes: int) -> str | None:
    parts = path.split("/")
    fd = parent(root, parts[:-1])
    try:
        try:
            entry = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
            handle = os.open(parts[-1], READ, dir_fd=fd)
        except OSError:
            return None
        try:
            st = os.fstat(handle)
            if (not stat.S_ISREG(st.st_mode) or st.st_size > max_bytes
                    or (st.st_dev, st.st_ino) != (entry.st_dev, entry.st_ino)):  # a link's target (see open_dir)
                return None
            os.set_blocking(handle, True)
            sha = hashlib.sha256()
            for chunk in iter(lambda: os.read(handle, 1 << 20), b""):
                sha.update(chunk)
            return sha.hexdigest()
        finally:
            os.close(handle)
    finally:
        os.close(fd)


def reserve(root: str, parts: list[str]) -> str:
    fd = parent(root, parts[:-1], make=True)
    base = parts[-1]
    stem, dot, ext = base.rpartition(".")
    if not stem:
        stem, dot, ext = base, "", ""
    try:
        for n in range(10_000):
            candidate = base if n == 0 else f"{stem}-{n}{dot}{ext}"
            try:
                os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=fd))
            except FileExistsError:
                continue
            return "/".join([*parts[:-1], candidate])
    finally:
        os.close(fd)
    sys.exit(4)


def delete(root: str, path: str) -> None:
    parts = path.split("/")
    fd = parent(root, parts[:-1])
    try:
        try:
            st = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
        except OSError:
            sys.exit(2)
        if stat.S_ISDIR(st.st_mode):
            sys.exit(3)
        os.unlink(parts[-1], dir_fd=fd)
    finally:
        os.close(fd)


def main(argv: list[str]) -> None:
    command, root = argv[0], argv[1]
    out: Any = None
    if command == "list":
        found: list[list[Any]] = []
        fd = os.open(root, DIR)
        try:
            walk(fd, "", 0, found, int(argv[2]))
        finally:
            os.close(fd)
        out = found
    elif command == "hash":
        out = {path: digest(root, path, int(argv[2])) for path in json.loads(argv[3])}
    elif command == "reserve":
        out = reserve(root, json.loads(argv[2]))
    elif command == "delete":
        delete(root, argv[2])
    else:
        sys.exit(f"files: unknown command {command!r}")
    sys.stdout.write(json.dumps(out))


main(sys.argv[1:])
