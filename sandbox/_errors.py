"""The sandbox error tree. Catch ``SandboxError`` to catch every platform failure.

    SandboxError
    ├── ConfigError            a setting or limit that cannot be used
    ├── BackendUnavailable     the container engine cannot be reached
    │   └── NoEngineAvailable  no Docker engine of several can take a new sandbox (drained or full)
    ├── ImageNotFound          the kernel image is not built
    ├── ImageBuildError        building the kernel image failed
    ├── KernelStartError       a kernel did not come up
    ├── SessionClosed          the session was stopped
    └── FileError
        ├── InvalidFileName    a name with path parts, control characters, ...
        ├── FileNotFound       no such file in /mnt/data
        ├── UnsafeFile         a symlink, FIFO, device or directory where a file was expected
        └── FileTooLarge       over the configured size cap

Errors in the user's code are never raised: they are data in ``ExecutionResult``.
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailable",
    "ConfigError",
    "FileError",
    "FileNotFound",
    "FileTooLarge",
    "HibernationError",
    "HibernationUnsupported",
    "ImageBuildError",
    "ImageNotFound",
    "InvalidFileName",
    "KernelStartError",
    "NoEngineAvailable",
    "SandboxError",
    "SessionClosed",
    "UnsafeFile",
]


class SandboxError(Exception):
    """A failure of the platform, never of the user's code."""


class HibernationError(SandboxError):
    """A checkpoint or a restore failed: the host's memory is lost, its /mnt/data is not."""


class HibernationUnsupported(HibernationError):
    """This backend or runtime cannot checkpoint memory (only gVisor's runsc can, here)."""


class ConfigError(SandboxError, ValueError):
    pass


class BackendUnavailable(SandboxError):
    pass


class NoEngineAvailable(BackendUnavailable):
    """Every Docker engine is drained (it stopped answering) or lacks the free memory for one more sandbox."""


class ImageNotFound(SandboxError):
    pass


class ImageBuildError(SandboxError):
    pass


class KernelStartError(SandboxError):
    pass


class SessionClosed(SandboxError):
    pass


class FileError(SandboxError):
    pass


class InvalidFileName(FileError):
    pass


class FileNotFound(FileError):
    pass


class UnsafeFile(FileError):
    pass


class FileTooLarge(FileError):
    pass
