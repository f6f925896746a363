"""A size-capped /mnt/data: a sparse ext4 image, loop-mounted on this host for one session.

Docker has no per-bind-mount quota, and a plain host directory lets the code fill
the host's disk. A sparse image file holds at most its size on the host's disk,
so the code can write no more than the quota however it tries (many files, one
huge file, or holes). Mounting needs root and a free loop device; where either
is missing the caller falls back to a plain directory (see ``DockerConfig.data_quota``).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Collection
from pathlib import Path

from ._datadir import DataDir
from ._errors import ConfigError

__all__ = ["QuotaUnavailable", "loop_mount", "make_data_dir", "quota_possible", "release_mount",
           "release_stale_workdirs", "release_workdir"]

log = logging.getLogger("codeinterp.sandbox")

# No journal (the image dies with the session; nothing to replay), lazy inode tables (the
# image stays sparse and mkfs takes milliseconds), no reserved blocks, and one inode per 8 KiB
# so that many small files run into the byte quota rather than an early inode limit.
_MKFS = ["mkfs.ext4", "-q", "-F", "-m", "0", "-i", "8192", "-O", "^has_journal",
         "-E", "lazy_itable_init=1,nodiscard"]
# noexec: nothing in /mnt/data can be run as a program; nosuid/nodev: no planted setuid file or device works.
_MOUNT_OPTIONS = "loop,nosuid,nodev,noexec"


class QuotaUnavailable(ConfigError):
    """This host cannot loop-mount a quota image (not root, no loop device, no mkfs.ext4)."""


def quota_possible() -> str | None:
    """None when loop mounts can work here; why not otherwise."""
    if os.geteuid() != 0:
        return "not running as root"
    if not Path("/dev/loop-control").exists():
        return "no /dev/loop-control (the loop driver is not available)"
    return None


def _run(args: list[str], timeout: float = 30) -> None:
    try:
        done = subprocess.run(args, capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise QuotaUnavailable(f"{args[0]} failed: {exc}") from exc
    if done.returncode != 0:
        raise QuotaUnavailable(f"{' '.join(args[:2])} failed: {done.stderr.decode(errors='replace').strip()}")


def loop_mount(image: Path, mountpoint: Path, size: int, uid: int) -> None:
    """Make a ``size``-byte sparse ext4 image and mount it at ``mountpoint``, owned by ``uid``."""
    if size < 1 << 20:
        raise ConfigError(f"data_size {size} is too small for a file system; use at least 1m")
    reason = quota_possible()
    if reason is not None:
        raise QuotaUnavailable(reason)
    with open(image, "wb") as handle:
        handle.truncate(size)  # sparse: no host disk is used until the code writes
    _run([*_MKFS, str(image)])
    mountpoint.mkdir(parents=True, exist_ok=True, mode=0o755)
    _run(["mount", "-o", _MOUNT_OPTIONS, str(image), str(mountpoint)])
    try:
        os.rmdir(mountpoint / "lost+found")  # not a file of the session's; keep /mnt/data empty
        os.chown(mountpoint, uid, uid)
        os.chmod(mountpoint, 0o755)
    except OSError:
        release_mount(mountpoint)
        raise


def release_mount(mountpoint: Path) -> bool:
    """Unmount ``mountpoint`` if something is mounted there; True when nothing is left mounted.

    ``mount -o loop`` sets the loop device to clear itself, so unmounting also frees it.
    A busy mount (a container that still holds it) is detached lazily: it goes away, and
    its loop device with it, once the last user lets go.
    """
    for attempt in range(3):
        if not os.path.ismount(mountpoint):
            return True
        try:
            subprocess.run(["umount", str(mountpoint)], capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if not os.path.ismount(mountpoint):
            return True
        time.sleep(0.1 * (attempt + 1))
    try:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        pass
    if os.path.ismount(mountpoint):
        log.error("cannot unmount a session's /mnt/data", extra={"path": str(mountpoint)})
        return False
    log.warning("a session's /mnt/data was busy; detached lazily", extra={"path": str(mountpoint)})
    return True


_warned: list[str] = []


def make_data_dir(data: DataDir, *, size: int, mode: str) -> bool:
    """Create a session's /mnt/data on this host; True when it is a quota mount.

    ``mode`` is ``auto`` (a quota mount where this host allows one, else a plain directory
    with a logged warning), ``loop`` (a quota mount or an error) or ``off`` (a plain directory).
    """
    if mode not in ("auto", "loop", "off"):
        raise ConfigError(f"data_quota {mode!r} is not one of auto, loop, off")
    if mode != "off":
        try:
            loop_mount(data.path.with_name(data.path.name + ".img"), data.path, size,
                       data.uid if data.uid is not None else os.geteuid())
            return True
        except QuotaUnavailable as exc:
            if mode == "loop":
                raise
            if not _warned:  # once per process: every session would say the same
                _warned.append(str(exc))
                log.warning("no disk quota for /mnt/data: %s; the code can fill this host's disk "
                            "(set data_quota=off to silence this)", exc)
    data.create()
    return False


def release_workdir(root: Path) -> bool:
    """Unmount a session's /mnt/data, then delete its work dir; False if the mount would not go.

    Never rmtree a mounted image: that would leave the mount, and its loop device, behind.
    """
    if not release_mount(root / "data"):
        return False
    shutil.rmtree(root, ignore_errors=True)
    return True


_WORKDIR_NAME = re.compile(r"[0-9a-f]{12}")  # DockerBackend names a session's work dir with 6 random bytes


def release_stale_workdirs(work_root: Path, in_use: Collection[Path], *, older_than: float) -> int:
    """Release the session work dirs under ``work_root`` that no container mounts and that are older than
    ``older_than`` seconds; how many went.

    They are what a container removed outside this library leaves (``docker rm -f``, a killed test
    run): a mounted quota image that holds a loop device until the host reboots. The age spares a
    session that another process is starting now, whose container does not exist yet.
    """
    if not work_root.is_dir():
        return 0
    deadline, released = time.time() - older_than, 0
    for root in work_root.iterdir():
        try:
            stale = (_WORKDIR_NAME.fullmatch(root.name) is not None and root not in in_use
                     and root.is_dir() and not root.is_symlink() and root.stat().st_mtime < deadline)
        except OSError:  # gone meanwhile
            continue
        if stale and release_workdir(root):
            released += 1
            log.warning("released the work dir of a sandbox removed elsewhere", extra={"path": str(root)})
    return released
