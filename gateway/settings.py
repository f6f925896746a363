"""The gateway's settings: one class, read from CODEINTERP_* variables, built only in the composition root."""

from __future__ import annotations

import hashlib
import os
import re
import socket
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from sandbox import ConfigError, DockerHost, parse_hosts, parse_size

__all__ = ["Settings"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CODEINTERP_", extra="ignore")

    # Where to listen. Without api_keys the server refuses any non-loopback host.
    host: str = "127.0.0.1"
    port: int = 8000
    # Where the database and the file store live; both survive restarts.
    data_dir: Path = Path("./data")
    # SQLAlchemy URL; empty means an SQLite file in data_dir. Several gateways share one PostgreSQL
    # database, e.g. postgresql+asyncpg://user:password@dbhost:5432/codeinterp.
    database_url: str = ""
    # Where stored files' bytes live; empty means data_dir/files. Gateways sharing a database must share
    # this directory too (one filesystem: NFS, CephFS, a shared volume).
    file_store: str = ""
    # This gateway's name, recorded on the sandboxes it holds and the calls it runs, so that its startup
    # recovery touches only those; empty means hostname + a hash of data_dir. Unique per gateway.
    node_name: str = ""
    # The URL other gateways use to reach this one (to forward a thread's calls to its sandbox); empty
    # means http://<host>:<port>, with this machine's hostname when host is 0.0.0.0 or ::.
    advertise_url: str = ""
    # Seconds between two heartbeats, and after which a silent gateway counts as gone.
    heartbeat_interval: float = 5.0
    node_timeout: float = 20.0
    # Accepted bearer keys, comma-separated in the environment. Empty: no auth, loopback only.
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Largest upload, in bytes (OpenAI's limit is 512 MB).
    max_upload_bytes: int = 512 * 1024 * 1024
    # Largest number of file_ids on one container or call (OpenAI's limit is 20).
    max_file_ids: int = 20
    # The kernel image; empty means the default image for this checkout.
    image: str = ""
    # Where per-session data and socket dirs live on this host; keep it short (unix socket paths).
    work_root: Path = Path("/tmp/codeinterp")
    # Default and maximum seconds for one code-interpreter call.
    default_timeout: float = 60.0
    max_timeout: float = 600.0
    # Seconds of silence on a streamed call before an SSE comment line is sent, so that a proxy with an
    # idle timeout (often 60 s) does not cut a call that prints nothing for minutes; 0 sends none.
    sse_keepalive: float = 15.0
    # FastAPI's OpenTelemetry spans and metrics, for an SDK configured in this process (for example by
    # opentelemetry-instrument). Off by default: /metrics has the gateway's own, and the check for a
    # provider would cost every request even with none set up.
    opentelemetry: bool = False
    # CPU cores, process count and tmpfs sizes for each sandbox.
    cpus: float = 1.0
    pids_limit: int = 256
    tmp_size: str = "256m"
    # Disk quota for each sandbox's /mnt/data (a loop-mounted image of this size; the host's disk use
    # grows by at most this much per sandbox).
    data_size: str = "1g"
    # How /mnt/data gets its quota: "auto" (a loop mount when running as root, else a plain directory
    # with a warning), "loop" (required: sandboxes fail to start without it) or "off" (no quota).
    data_quota: str = "auto"
    # The Docker runtime for sandboxes, e.g. "runsc" for gVisor; empty means Docker's default (runc).
    runtime: str = ""
    # Docker engines to place sandboxes on, comma-separated: "local" (this machine's engine, DOCKER_HOST or
    # the socket) and tcp://HOST:PORT engines reached with TLS. A new sandbox goes to the engine with the
    # most free memory (its RAM less docker_memory_reserve less its sandboxes' memory limits); an engine
    # that stops answering is drained. Empty: only this machine's engine, as before.
    docker_hosts: str = ""
    # The client certificate for tcp:// engines: a directory with ca.pem, cert.pem and key.pem; a
    # subdirectory named after a host (e.g. 10.0.0.5/) holds that host's own files.
    docker_tls_dir: str = ""
    # Memory kept free on every engine for its own processes, when sandboxes are placed on several.
    docker_memory_reserve: str = "1g"
    # Failed calls in a row after which an engine is drained, and seconds between two pings of a drained one.
    docker_max_failures: int = 3
    docker_recheck: float = 300.0
    # Idle sandboxes hibernate instead of expiring, where the runtime can (gVisor's runsc): their whole
    # memory is checkpointed to disk and the next call wakes them with every variable intact.
    hibernate: bool = True
    # Disk for hibernated sandboxes' checkpoints, at most; beyond it the least recently used ones drop
    # to files-only (their next call gets a new kernel with the files in /mnt/data).
    checkpoint_budget: str = "10g"
    # Idle minutes before a thread's sandbox expires (containers carry their own expires_after).
    thread_expiry_minutes: float = 60
    # Seconds between sweeps for idle sandboxes to expire.
    expiry_interval: float = 30.0
    # Sandboxes kept started with a ready kernel (default image and memory limit); 0 turns the pool off.
    pool_size: int = 2
    # Seconds between two pool refills, so refilling cannot starve running calls on a small machine.
    pool_pause: float = 0.5
    # Capacity goes by measurement, not by a count (README, "Capacity"). A new sandbox is admitted while
    # the host's free memory (MemAvailable; and sandbox_cgroup's limit less its usage, when set), less
    # sandbox_memory for it and for each sandbox still starting, stays above memory_reserve, and while
    # the CPU pressure is at most cpu_pressure_limit. Each sandbox keeps its own memory limit.
    # Free memory kept for the host and the gateway, e.g. "2g"; empty: 10 % of RAM, 512 MiB at least.
    # When the free memory falls under it, idle sandboxes expire (files kept), least recently used first.
    memory_reserve: str = ""
    # What a new sandbox is expected to take before it is measured (an idle one takes about 40 MiB).
    sandbox_memory: str = "64m"
    # A cgroup directory holding the sandboxes, whose limit also bounds them, e.g.
    # /sys/fs/cgroup/memory/docker (v1) or a slice given to Docker as cgroup-parent (v2); empty: none.
    sandbox_cgroup: str = ""
    # Percent of the last 10 s in which some task waited for a CPU (/proc/pressure/cpu "some avg10")
    # above which new sandboxes wait (and get a 429 after capacity_wait); 0 turns it off. Ignored on
    # kernels without pressure information.
    cpu_pressure_limit: float = 95.0
    # Seconds between two checks of free memory, which expire idle sandboxes when it runs low.
    memory_check_interval: float = 2.0
    # An optional hard cap on live sandboxes, the pool included; 0: none (memory and CPU decide).
    max_sandboxes: int = 0
    # Seconds a new sandbox waits for room (after evicting idle ones) before the request gets a 429.
    capacity_wait: float = 10.0
    # Seconds SIGTERM waits for running calls before the sandboxes are saved and stopped.
    shutdown_grace: float = 30.0
    # Extra labels for every container, as JSON (tests tag their runs with it).
    container_labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @field_validator("memory_reserve", "sandbox_memory", "docker_memory_reserve")
    @classmethod
    def _check_size(cls, value: str) -> str:
        if value.strip():
            try:
                parse_size(value)
            except ConfigError as exc:
                raise ValueError(str(exc)) from exc
        return value

    def reserve_bytes(self, total_memory: int) -> int:
        """memory_reserve in bytes; by default 10 % of ``total_memory``, 512 MiB at least."""
        if self.memory_reserve.strip():
            return parse_size(self.memory_reserve)
        return max(512 << 20, total_memory // 10)

    @property
    def host_memory(self) -> int:
        """Bytes of RAM on this machine; 0 when it cannot be read."""
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            return 0

    @field_validator("node_name")
    @classmethod
    def _check_node(cls, value: str) -> str:
        if value and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", value):
            raise ValueError("node_name must be 1-128 of [A-Za-z0-9_.-], starting with a letter or digit")
        return value

    @property
    def node(self) -> str:
        if self.node_name:
            return self.node_name
        digest = hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:8]
        host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:100] or "node"
        return f"{host}-{digest}"

    @property
    def node_url(self) -> str:
        if self.advertise_url:
            return self.advertise_url.rstrip("/")
        host = socket.gethostname() if self.host in ("0.0.0.0", "::", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    def docker_engines(self) -> tuple[DockerHost, ...]:
        """The engines docker_hosts lists (none: this machine's only)."""
        tls = Path(self.docker_tls_dir) if self.docker_tls_dir.strip() else None
        return parse_hosts(self.docker_hosts, tls) if self.docker_hosts.strip() else ()

    @property
    def files_dir(self) -> Path:
        return Path(self.file_store) if self.file_store else self.data_dir / "files"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir.resolve() / 'codeinterp.db'}"
