"""The Docker engines sandboxes run on, their health, and which one takes a new sandbox.

A DockerBackend talks to one engine (DOCKER_HOST, as before) or to several listed in
``DockerConfig.hosts``: the one on this machine (``unix://``) and others reached over TCP with TLS.

Placement goes by free capacity. The gateway cannot measure another machine's free memory through
Docker's API, so an engine's free capacity is what it reports as its RAM, less a reserve, less the
memory limits of the sandboxes running on it (every codeinterp container carries its limit in a
label, whoever made it): a remote engine is never overcommitted. A new sandbox goes to the engine
with the most free memory; ties go to the one with fewer sandboxes, then to the first listed.

An engine that stops answering is drained, not retried forever: each failed call counts, a failing
engine is skipped for a back-off that doubles, and after ``max_failures`` failures in a row it is
drained: no sandbox is placed there, and calls for the sandboxes it holds fail at once instead of
waiting for a time-out each. A drained engine is asked one ping per ``recheck`` seconds (default
five minutes) and comes back only when that ping answers.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.tls

from ._errors import ConfigError
from ._execpipe import exec_output

__all__ = ["DockerHost", "Engine", "EnginePolicy", "Load", "choose", "committed", "measure", "parse_hosts", "states"]

log = logging.getLogger("codeinterp.sandbox")
_FIRST_API = "1.41"  # Docker 20.10's, asked only for /version
MEMORY_LABEL = "codeinterp.memory"  # the sandbox's memory limit in bytes, which placement adds up


@dataclass(frozen=True)
class DockerHost:
    """One Docker engine: ``unix:///var/run/docker.sock`` here, or ``tcp://HOST:PORT`` with TLS files."""

    url: str
    # A directory with ca.pem, cert.pem and key.pem (Docker's DOCKER_CERT_PATH layout); required for tcp://.
    tls_dir: Path | None = None

    @property
    def name(self) -> str:
        return "local" if self.local else self.url.split("://", 1)[1].rstrip("/")

    @property
    def local(self) -> bool:
        """On this machine: /mnt/data can be a directory here, bind-mounted, with a loop-mounted quota."""
        return self.url.startswith("unix://")

    @classmethod
    def from_environment(cls, base_url: str | None) -> DockerHost:
        """The one engine of a backend without ``hosts``: ``base_url``, or DOCKER_HOST (and DOCKER_CERT_PATH)."""
        url = base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        certs = os.environ.get("DOCKER_CERT_PATH")
        return cls(url.replace("http://", "tcp://"), Path(certs) if certs and url.startswith("tcp://") else None)

    def __post_init__(self) -> None:
        if not self.url.startswith(("unix://", "tcp://")):
            raise ConfigError(f"Docker host {self.url!r} must be unix://PATH or tcp://HOST:PORT")
        if not self.local:
            if self.tls_dir is None:
                raise ConfigError(f"Docker host {self.url} is reached over TCP and needs TLS: set its cert dir "
                                  "(CODEINTERP_DOCKER_TLS_DIR, holding ca.pem, cert.pem and key.pem)")
            missing = [f for f in ("ca.pem", "cert.pem", "key.pem") if not (self.tls_dir / f).is_file()]
            if missing:
                raise ConfigError(f"TLS dir {self.tls_dir} for {self.url} lacks {', '.join(missing)}")


def parse_hosts(value: str, tls_dir: Path | None) -> tuple[DockerHost, ...]:
    """``local,tcp://10.0.0.5:2376``: ``local`` is this machine's engine (DOCKER_HOST or the socket).

    A subdirectory of ``tls_dir`` named after a host (``10.0.0.5``) holds that host's own files.
    """
    hosts: list[DockerHost] = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        if item == "local":
            item = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        own = None
        if item.startswith("tcp://") and tls_dir is not None:
            own = tls_dir / item[len("tcp://"):].rsplit(":", 1)[0]
        hosts.append(DockerHost(item, own if own is not None and own.is_dir() else tls_dir))
    if len({h.name for h in hosts}) != len(hosts):
        raise ConfigError(f"Docker hosts {value!r} name one engine twice")
    return tuple(hosts)


@dataclass(frozen=True)
class EnginePolicy:
    """How engines are chosen and drained; see the module's docstring."""

    memory_reserve: int = 1 << 30  # kept free on every engine for its own processes
    probe_timeout: float = 5.0  # seconds a placement waits for an engine's answer
    max_failures: int = 3  # failed calls in a row after which an engine is drained
    backoff: float = 2.0  # seconds a failing engine is skipped after its first failure; doubles
    recheck: float = 300.0  # seconds between two pings of a drained engine
    timeout: float = 30.0  # seconds for one Docker API call


class Engine:
    """One engine's client and health. Thread-safe: Docker calls run on a thread pool."""

    def __init__(self, host: DockerHost, policy: EnginePolicy, *, drains: bool) -> None:
        self.host = host
        self.policy = policy
        self.drains = drains  # a lone engine is never drained: there is nowhere else to go
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()  # health: taken on the event loop, so never held across a call
        self._client_lock = threading.Lock()  # making the client may wait on the engine: pool threads only
        self.failures = 0
        self.drained = False
        self.last_error = ""
        self._skip_until = 0.0
        self.memory_total = 0  # bytes, from `docker info`; 0 until known
        self.default_runtime: str | None = None  # from `docker info`, once a sandbox needs it

    @property
    def name(self) -> str:
        return self.host.name

    def client(self) -> docker.DockerClient:
        with self._client_lock:
            if self._client is None:
                if self.host.local:
                    self._client = docker.DockerClient(base_url=self.host.url, timeout=int(self.policy.timeout))
                else:
                    assert self.host.tls_dir is not None
                    tls = docker.tls.TLSConfig(client_cert=(str(self.host.tls_dir / "cert.pem"),
                                                            str(self.host.tls_dir / "key.pem")),
                                               ca_cert=str(self.host.tls_dir / "ca.pem"), verify=True)
                    # requests lets REQUESTS_CA_BUNDLE replace the engine's CA, and *_PROXY route the
                    # engine's traffic elsewhere: neither may apply to a connection pinned by hand. So the
                    # client starts at a fixed API version (asking the engine's would use them) and
                    # learns the engine's once trust_env is off.
                    client = docker.DockerClient(base_url=self.host.url, tls=tls, version=_FIRST_API,
                                                 timeout=int(self.policy.timeout))
                    api: Any = client.api  # private members: docker-py has no switch for this
                    api.trust_env = False
                    api._version = api._retrieve_server_version()
                    self._client = client
            return self._client

    def ssl_context(self) -> ssl.SSLContext | None:
        """For the raw exec stream (``_ExecPipe``), which does not go through docker-py."""
        if self.host.local:
            return None
        assert self.host.tls_dir is not None
        context = ssl.create_default_context(cafile=str(self.host.tls_dir / "ca.pem"))
        context.load_cert_chain(str(self.host.tls_dir / "cert.pem"), str(self.host.tls_dir / "key.pem"))
        return context

    def exec_output(self, exec_id: str, limit: int) -> tuple[bytes, bytes]:
        """Run a created exec to its end: its stdout (at most ``limit`` bytes) and the start of its stderr."""
        return exec_output(self.host.url, exec_id, self.ssl_context(), limit=limit, timeout=self.policy.timeout)

    def placeable(self, now: float) -> bool:
        """Whether a placement may ask this engine now (a drained one only once per ``recheck``)."""
        with self._lock:
            return now >= self._skip_until

    def succeeded(self) -> None:
        with self._lock:
            if self.drained:
                log.warning("Docker engine answers again; sandboxes may be placed there",
                            extra={"engine": self.name})
            self.failures, self.drained, self._skip_until = 0, False, 0.0

    def failed(self, error: str) -> None:
        if not self.drains:
            return
        with self._lock:
            self.failures += 1
            self.last_error = error
            now = time.monotonic()
            if self.failures >= self.policy.max_failures:
                if not self.drained:
                    log.error("Docker engine drained after %d failed calls: %s", self.failures, error,
                              extra={"engine": self.name})
                self.drained = True
                self._skip_until = now + self.policy.recheck
            else:
                self._skip_until = now + self.policy.backoff * 2 ** (self.failures - 1)

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def describe(self) -> dict[str, Any]:
        state = "drained" if self.drained else "failing" if self.failures else "ok"
        return {"name": self.name, "url": self.host.url, "state": state, "failures": self.failures,
                "last_error": self.last_error}


@dataclass(frozen=True)
class Load:
    """What placement learned from one engine: its committed memory and sandbox count."""

    engine: Engine
    committed: int
    sandboxes: int

    def free(self, reserve: int) -> int:
        return self.engine.memory_total - reserve - self.committed


def committed(containers: list[dict[str, Any]]) -> int:
    """Memory limits of the listed sandboxes, from their labels (unlabelled ones count as 0)."""
    total = 0
    for container in containers:
        try:
            total += int((container.get("Labels") or {}).get(MEMORY_LABEL, 0))
        except ValueError:
            continue
    return total


def choose(loads: list[Load], memory: int, reserve: int) -> Load | None:
    """The load with the most free memory that can take ``memory`` more; None when none can."""
    fitting = [load for load in loads if load.free(reserve) >= memory]
    if not fitting:
        return None
    order = {id(load): n for n, load in enumerate(loads)}
    return min(fitting, key=lambda load: (-load.free(reserve), load.sandboxes, order[id(load)]))


def measure(engine: Engine, label: str) -> Load:
    """The engine's load now: its memory, and the limits on its sandboxes (carrying ``label``=1) (blocking)."""
    client = engine.client()
    if not engine.memory_total:
        engine.memory_total = int(client.info().get("MemTotal") or 0)
    running = client.api.containers(filters={"label": f"{label}=1"})
    return Load(engine, committed(running), len(running))


def states(engines: list[Engine], loads: list[Load], reserve: int) -> str:
    """Why no engine could take a sandbox, engine by engine: for the NoEngineAvailable message."""
    return "; ".join(
        f"{e.name}: drained ({e.last_error})" if e.drained else
        f"{e.name}: not answering ({e.last_error})" if all(x.engine is not e for x in loads) else
        f"{e.name}: {next(x for x in loads if x.engine is e).free(reserve) >> 20} MiB free"
        for e in engines)
