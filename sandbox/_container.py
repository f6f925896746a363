"""What a sandbox container is: its configuration, environment, labels and ``docker run`` arguments."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docker.types import Ulimit

from ._backend import SessionSpec, parse_size
from ._engines import MEMORY_LABEL, DockerHost, EnginePolicy
from ._errors import ConfigError
from ._inside import source
from ._seccomp import profile_json

__all__ = ["LABEL", "DockerConfig", "kernel_environment", "labels", "run_arguments", "security_opt"]

LABEL = "codeinterp"  # every container we make carries it; sweep by it
RUN = "/run/kernel"  # the kernel's connection file and ipc sockets: a tmpfs private to the container
CHANNEL = "/run/codeinterp-channel"  # the host's socket for the relay (runc): mounted read-only
HOME = "/home/sandbox"
PYTHON = "/opt/venv/bin/python"
KEY_VAR = "CODEINTERP_KERNEL_KEY"


@dataclass(frozen=True)
class DockerConfig:
    """How DockerBackend runs containers. Defaults are the safe ones."""

    image: str | None = None  # None: the default image for this checkout
    work_root: Path = Path("/tmp/codeinterp")  # per-session /mnt/data dirs (and their quota images)
    uid: int = 1000  # the kernel user; never root
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    labels: Mapping[str, str] = field(default_factory=dict)  # added to every container
    env: Mapping[str, str] = field(default_factory=dict)  # added to every kernel's environment
    runtime: str | None = None  # e.g. "runsc" for gVisor
    seccomp: str = "codeinterp"  # "codeinterp" (ours: Docker's lacks ptrace), "docker" (its default)
    # /mnt/data as a loop-mounted image of Limits.data_size: "auto" (when this host allows it, else a
    # plain directory and a warning), "loop" (required: a session fails to start without it) or "off".
    # On an engine of another machine it is a tmpfs volume of that size unless "off" (sandbox/_volumefiles.py).
    data_quota: str = "auto"
    base_url: str | None = None  # the Docker endpoint; None reads DOCKER_HOST
    # Engines to place sandboxes on (sandbox/_engines.py); empty: the one base_url or DOCKER_HOST names.
    hosts: tuple[DockerHost, ...] = ()
    placement: EnginePolicy = field(default_factory=EnginePolicy)  # how engines are chosen and drained
    workers: int = 16  # threads for blocking Docker calls


def kernel_environment(spec: SessionSpec, extra: Mapping[str, str]) -> dict[str, str]:
    """The allowlisted environment: nothing of the host's or the gateway's own."""
    threads = str(max(1, int(spec.limits.cpus)))
    env = {
        "HOME": HOME,
        "USER": "sandbox",
        "PATH": "/opt/venv/bin:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "MPLCONFIGDIR": f"{HOME}/.config/matplotlib",
        "OPENBLAS_NUM_THREADS": threads,
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
    }
    env.update(extra)
    env.update(spec.env)
    return env


def labels(config: DockerConfig, spec: SessionSpec) -> dict[str, str]:
    return {**config.labels, **spec.labels, LABEL: "1", MEMORY_LABEL: str(spec.limits.memory_bytes),
            f"{LABEL}.session": spec.session_id[:200], f"{LABEL}.owner": config.owner}


def security_opt(config: DockerConfig) -> list[str]:
    options = ["no-new-privileges"]
    gvisor = "runsc" in (config.runtime or "")
    if config.seccomp == "docker" and gvisor:
        raise ConfigError("seccomp='docker' cannot run a kernel under gVisor (runsc turns the profile's "
                          "ENOSYS for clone3 into EPERM, so no thread starts); use seccomp='codeinterp'")
    if config.seccomp == "codeinterp":
        # gVisor applies it inside its own kernel (runsc --oci-seccomp), which needs a variant.
        options.append(f"seccomp={profile_json(gvisor=gvisor)}")
    elif config.seccomp != "docker":
        raise ConfigError(f"seccomp must be 'codeinterp' or 'docker', not {config.seccomp!r}")
    return options


def run_arguments(config: DockerConfig, spec: SessionSpec, image: str, key: str, hmac_key: str,
                  mount: dict[str, Any]) -> dict[str, Any]:
    """Everything ``containers.run`` gets for one sandbox: no network, read-only, no capabilities, limits."""
    limits, uid = spec.limits, config.uid
    memory = limits.memory_bytes
    run_args: dict[str, Any] = dict(
        image=image,
        # The image gives tini, Python and ipykernel; how the kernel starts is ours, so that
        # both ends of the channel come from this checkout (see sandbox/_inside).
        entrypoint=["/usr/bin/tini", "-g", "--", PYTHON, "-I", "-c", source("launcher"), RUN],
        command=[],
        name=f"codeinterp-{key}",
        detach=True,
        labels=labels(config, spec),
        network_mode="none",
        user=f"{uid}:{uid}",
        read_only=True,
        tmpfs={
            "/tmp": f"size={parse_size(limits.tmp_size)},mode=1777,nosuid,nodev",
            HOME: f"size={parse_size(limits.home_size)},uid={uid},gid={uid},mode=0700,nosuid,nodev",
            RUN: f"size=1m,uid={uid},gid={uid},mode=0700,nosuid,nodev,noexec",
        },
        volumes=mount,
        environment={**kernel_environment(spec, config.env), KEY_VAR: hmac_key},
        working_dir=HOME,
        cap_drop=["ALL"],
        security_opt=security_opt(config),
        pids_limit=limits.pids,
        mem_limit=memory,
        memswap_limit=memory,
        mem_swappiness=0,
        nano_cpus=int(limits.cpus * 1e9),
        ulimits=[Ulimit(name="nofile", soft=4096, hard=4096),
                 Ulimit(name="core", soft=0, hard=0)],
        log_config={"type": "json-file", "config": {"max-size": "1m", "max-file": "1"}},
        ipc_mode="private",
    )
    if config.runtime:
        run_args["runtime"] = config.runtime
    return run_args
