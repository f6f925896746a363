"""codeinterp's sandbox: Jupyter kernels in locked-down containers, one per session.

An async library with no web framework in it::

    backend = DockerBackend()
    async with await Session.start(backend, "thread-1") as session:
        result = await session.execute("print(1 + 1)")
        assert result.stdout == "2\\n"
"""

from ._backend import Backend, Hibernation, KernelHost, Limits, SessionSpec, parse_size
from ._datadir import safe_name
from ._docker import LABEL, DockerBackend, DockerConfig
from ._engines import DockerHost, EnginePolicy, parse_hosts
from ._errors import (
    BackendUnavailable,
    ConfigError,
    FileError,
    FileNotFound,
    FileTooLarge,
    HibernationError,
    HibernationUnsupported,
    ImageBuildError,
    ImageNotFound,
    InvalidFileName,
    KernelStartError,
    NoEngineAvailable,
    SandboxError,
    SessionClosed,
    UnsafeFile,
)
from ._image import ImageSpec, build_kernel_image, default_image, image_exists
from ._local import LocalBackend
from ._results import (
    Display,
    ExecutionError,
    ExecutionResult,
    FileInfo,
    KernelExit,
    Notice,
    Outcome,
    Output,
    Stream,
    log_fragment,
)
from ._runtime import DockerRuntimes, RuntimeCheck, check_runtime, docker_runtimes
from ._session import Session

__all__ = [
    "LABEL",
    "Backend",
    "BackendUnavailable",
    "ConfigError",
    "Display",
    "DockerBackend",
    "DockerConfig",
    "DockerHost",
    "DockerRuntimes",
    "EnginePolicy",
    "ExecutionError",
    "ExecutionResult",
    "FileError",
    "FileInfo",
    "FileNotFound",
    "FileTooLarge",
    "Hibernation",
    "HibernationError",
    "HibernationUnsupported",
    "ImageBuildError",
    "ImageNotFound",
    "ImageSpec",
    "InvalidFileName",
    "KernelExit",
    "KernelHost",
    "KernelStartError",
    "Limits",
    "LocalBackend",
    "NoEngineAvailable",
    "Notice",
    "Outcome",
    "Output",
    "RuntimeCheck",
    "SandboxError",
    "Session",
    "SessionClosed",
    "SessionSpec",
    "Stream",
    "UnsafeFile",
    "build_kernel_image",
    "check_runtime",
    "default_image",
    "docker_runtimes",
    "image_exists",
    "log_fragment",
    "parse_hosts",
    "parse_size",
    "safe_name",
]
