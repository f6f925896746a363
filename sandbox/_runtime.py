"""Container runtimes: which ones the Docker engine has, and whether the one chosen can run sandboxes.

Sandboxes run with Docker's ``--network none``. gVisor's runsc refuses to start in that case ("cannot
run with network enabled in root network namespace") unless it is registered with ``--network=none``
among its runtime args, so a registration without it fails every sandbox start.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from ._errors import BackendUnavailable

__all__ = ["DockerRuntimes", "RuntimeCheck", "check_runtime", "docker_runtimes"]

SETUP_RUNSC = "scripts/runsc-up.sh"


@dataclass(frozen=True)
class DockerRuntimes:
    """What `docker info` says: each runtime's registration, and the one used when none is named."""

    runtimes: Mapping[str, Mapping[str, Any]]
    default: str


@dataclass(frozen=True)
class RuntimeCheck:
    """Whether ``runtime`` (Docker's default when empty) can run sandboxes; when not, why and the fix."""

    runtime: str
    gvisor: bool
    problem: str | None = None
    fix: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def docker_runtimes() -> DockerRuntimes:
    """The runtimes of the Docker engine DOCKER_HOST points at."""
    try:
        done = subprocess.run(["docker", "info", "--format", "{{json .}}"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackendUnavailable(f"`docker info` failed ({exc}); start Docker with `scripts/docker-up.sh`") from exc
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip() or f"exit status {done.returncode}"
        raise BackendUnavailable(f"`docker info` failed ({reason}); start Docker with `scripts/docker-up.sh`")
    info = json.loads(done.stdout)
    return DockerRuntimes(runtimes=dict(info.get("Runtimes") or {}), default=str(info.get("DefaultRuntime") or "runc"))


def _is_gvisor(name: str, registration: Mapping[str, Any]) -> bool:
    return name == "runsc" or PurePath(str(registration.get("path") or "")).name == "runsc"


def check_runtime(runtime: str | None, engine: DockerRuntimes) -> RuntimeCheck:
    """Check the runtime sandboxes are configured to use against what the engine has registered."""
    name = runtime or engine.default
    registration = engine.runtimes.get(name)
    if registration is None:
        gvisor = name == "runsc"
        fix = (f"run {SETUP_RUNSC} (installs gVisor and registers it with Docker)" if gvisor else
               f"register {name!r} in /etc/docker/daemon.json and reload dockerd, or unset CODEINTERP_RUNTIME")
        return RuntimeCheck(name, gvisor, f"runtime {name!r} is not registered with Docker", fix)
    if not _is_gvisor(name, registration):
        return RuntimeCheck(name, gvisor=False)
    args = [str(a) for a in registration.get("runtimeArgs") or []]
    if "--network=none" not in args:
        return RuntimeCheck(
            name, True,
            f"runtime {name!r} is registered without --network=none (args: {args}); "
            "with Docker's --network none it refuses to start",
            f"run {SETUP_RUNSC} (adds the runtime args to /etc/docker/daemon.json and reloads dockerd)")
    if "--oci-seccomp" not in args:
        return RuntimeCheck(
            name, True,
            f"runtime {name!r} is registered without --oci-seccomp (args: {args}); "
            "gVisor would not apply the sandbox's seccomp profile",
            f"run {SETUP_RUNSC} (adds the runtime args to /etc/docker/daemon.json and reloads dockerd)")
    return RuntimeCheck(name, gvisor=True)
