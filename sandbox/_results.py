"""Immutable values that an execution produces."""

from __future__ import annotations

import base64
import binascii
import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "Display",
    "ExecutionError",
    "ExecutionResult",
    "FileInfo",
    "KernelExit",
    "Notice",
    "Outcome",
    "Output",
    "Stream",
    "log_fragment",
    "strip_ansi",
]

_IMAGE_TYPES = {"image/png": "png", "image/jpeg": "jpg"}
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


@dataclass(frozen=True)
class Stream:
    """Text the code wrote to stdout or stderr."""

    name: Literal["stdout", "stderr"]
    text: str
    kind: Literal["stream"] = "stream"


@dataclass(frozen=True)
class Display:
    """A MIME bundle from ``display()`` or a cell's value (``is_result``).

    Binary types (image/png, image/jpeg) stay base64-encoded, as Jupyter sends them.
    """

    data: Mapping[str, object]
    metadata: Mapping[str, object] = field(default_factory=dict)
    is_result: bool = False
    kind: Literal["display"] = "display"

    @property
    def text(self) -> str | None:
        value = self.data.get("text/plain")
        return value if isinstance(value, str) else None

    @property
    def image(self) -> tuple[str, bytes] | None:
        """The PNG or JPEG in this bundle as (file extension, bytes); None if there is none, or it is not base64."""
        for mime, extension in _IMAGE_TYPES.items():
            payload = self.data.get(mime)
            if isinstance(payload, str):
                try:
                    return extension, base64.b64decode(payload)
                except (binascii.Error, ValueError):
                    return None
        return None


@dataclass(frozen=True)
class Notice:
    """A message from the sandbox itself: a cap was hit, the kernel restarted, ..."""

    text: str
    kind: Literal["notice"] = "notice"


@dataclass(frozen=True)
class ExecutionError:
    """An exception raised by the user's code: data, never raised on the host."""

    name: str
    value: str
    traceback: tuple[str, ...] = ()
    kind: Literal["error"] = "error"

    @property
    def text(self) -> str:
        if self.traceback:
            return "\n".join(strip_ansi(line) for line in self.traceback)
        return f"{self.name}: {self.value}"


Output = Stream | Display | Notice | ExecutionError


class Outcome(enum.StrEnum):
    """How an execution ended."""

    OK = "ok"  # ran to the end
    ERROR = "error"  # ran to the end, raising
    TIMEOUT = "timeout"  # interrupted at the deadline
    KERNEL_DIED = "kernel_died"  # the kernel process ended during the execution
    OUT_OF_MEMORY = "out_of_memory"  # ... because it was OOM-killed
    CANCELLED = "cancelled"  # the caller went away; the kernel was interrupted


def log_fragment(output: Output, logs_so_far: str) -> str:
    """The text ``output`` adds to the logs; images add nothing, other displays their text/plain."""
    if isinstance(output, Stream):
        return output.text
    if isinstance(output, Display):
        if output.text is None or any(str(k).startswith("image/") for k in output.data):
            return ""
        text = output.text
    else:
        text = output.text
    lead = "\n" if logs_so_far and not logs_so_far.endswith("\n") else ""
    return f"{lead}{text}\n"


@dataclass(frozen=True)
class FileInfo:
    """A regular file under /mnt/data; ``path`` is relative to it."""

    path: str
    size: int
    mtime: float
    sha256: str | None = None

    @property
    def sandbox_path(self) -> str:
        return f"/mnt/data/{self.path}"


@dataclass(frozen=True)
class KernelExit:
    """Why a kernel process is no longer running."""

    exit_code: int | None
    oom_killed: bool = False

    @property
    def reason(self) -> str:
        if self.oom_killed:
            return "out of memory"
        if self.exit_code is None:
            return "unknown"
        if self.exit_code > 128:
            return f"killed by signal {self.exit_code - 128}"
        if self.exit_code < 0:
            return f"killed by signal {-self.exit_code}"
        return f"exit code {self.exit_code}"


@dataclass(frozen=True)
class ExecutionResult:
    """Everything one execution produced, in order of arrival."""

    outcome: Outcome
    outputs: tuple[Output, ...] = ()
    execution_count: int | None = None
    duration: float = 0.0
    files: tuple[FileInfo, ...] = ()
    files_truncated: bool = False
    kernel_restarted: bool = False
    exit: KernelExit | None = None

    @property
    def error(self) -> ExecutionError | None:
        for output in self.outputs:
            if isinstance(output, ExecutionError):
                return output
        return None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    def stream_text(self, name: str) -> str:
        return "".join(o.text for o in self.outputs if isinstance(o, Stream) and o.name == name)

    @property
    def stdout(self) -> str:
        return self.stream_text("stdout")

    @property
    def stderr(self) -> str:
        return self.stream_text("stderr")

    @property
    def logs(self) -> str:
        """What a model should read: streams, result text, traceback and notices, in order."""
        text = ""
        for output in self.outputs:
            text += log_fragment(output, text)
        return text

    @property
    def displays(self) -> tuple[Display, ...]:
        return tuple(o for o in self.outputs if isinstance(o, Display))
