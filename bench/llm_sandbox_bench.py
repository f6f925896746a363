"""Section 6: the same first-call and round-trip figures for the `llm-sandbox` library, on the same engine.

No container registry is reachable here, so llm-sandbox's own images (ghcr.io/vndee/...) cannot be
pulled. It runs on our kernel image instead, through a one-layer derived image built locally
(`codeinterp-bench-llm-sandbox:<base id>`), because llm-sandbox expects of an image:
  * a container that stays up doing nothing (it creates it with tty and the image's command, then
    `docker exec`s everything): ours starts a kernel that needs a connection file, so the derived image
    runs `tini -- sleep infinity` (sleep, not sh: `docker stop` would wait 10 s on a PID-1 shell);
  * `python` on PATH (it runs `python <file>`): ours has only python3 and /opt/venv/bin/python, so
    /opt/venv/bin goes first on PATH;
  * root (it writes /sandbox and defaults to user root);
  * for InteractiveSandboxSession, a venv at <workdir>/.sandbox-venv holding IPython (it pip-installs
    ipython there at every open): the derived image symlinks it to /opt/venv, which has IPython, so the
    install is a no-op with no network.
Its default environment setup (a fresh venv plus `pip install --upgrade pip` in every new container)
needs PyPI from inside the container; with network_mode none it spends seconds in pip's retries, so
it is skipped (skip_environment_setup=True), as llm-sandbox documents for pre-built images.
Containers get network_mode none (as ours) and the bench label, so the sweep removes them.
"""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

import docker

import sandbox

from .gateway_bench import Params
from .harness import BENCH_LABELS, log
from .stats import Row

__all__ = ["llm_sandbox"]

_DOCKERFILE = """FROM {base}
USER root
RUN mkdir -p /sandbox && ln -s /opt/venv /sandbox/.sandbox-venv
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
WORKDIR /sandbox
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["sleep", "infinity"]
"""


def _image() -> str:
    """The derived image, built once per kernel image (a cached one-layer build, no registry)."""
    client = docker.from_env()
    try:
        base = client.images.get(sandbox.default_image())
        tag = f"codeinterp-bench-llm-sandbox:{(base.id or '').removeprefix('sha256:')[:12]}"
        try:
            client.images.get(tag)
        except docker.errors.ImageNotFound:
            log(f"building {tag} from {sandbox.default_image()}")
            client.images.build(fileobj=io.BytesIO(_DOCKERFILE.format(base=sandbox.default_image()).encode()),
                                tag=tag, labels=BENCH_LABELS, rm=True)
        return tag
    finally:
        client.close()


def _measure(interactive: bool, image: str, p: Params) -> tuple[list[float], list[float]]:
    from llm_sandbox import InteractiveSandboxSession, SandboxSession  # type: ignore[import-untyped]

    def make() -> Any:
        options: dict[str, Any] = dict(
            lang="python", image=image, keep_template=True, skip_environment_setup=True,
            runtime_configs={"labels": dict(BENCH_LABELS), "network_mode": "none"})
        return InteractiveSandboxSession(**options) if interactive else SandboxSession(**options)

    first: list[float] = []
    for _ in range(p.llm_first_calls):
        began = time.perf_counter()
        session = make()
        try:
            session.open()
            result = session.run("print(1)")
            first.append(time.perf_counter() - began)
            if result.stdout != "1\n":
                raise RuntimeError(f"llm-sandbox print(1) gave {result.stdout!r} {result.stderr!r}")
        finally:
            session.close()
    trips: list[float] = []
    session = make()
    try:
        session.open()
        for n in range(min(p.warmup, 5) + p.llm_round_trips):
            began = time.perf_counter()
            result = session.run("pass")
            if n >= min(p.warmup, 5):
                trips.append(time.perf_counter() - began)
            if result.exit_code:
                raise RuntimeError(f"llm-sandbox `pass` failed: {result.stderr!r}")
    finally:
        session.close()
    return first, trips


async def llm_sandbox(p: Params) -> list[Row]:
    try:
        import llm_sandbox as lib  # noqa: F401
    except ImportError as exc:
        why = f"llm-sandbox is not installed ({exc}); `.venv/bin/pip install -e '.[dev]'`"
        return [Row("6", "llm-sandbox", note=why)]
    from importlib.metadata import version

    image = await asyncio.to_thread(_image)
    rows: list[Row] = []
    for interactive, kind in ((False, "SandboxSession (a new `python` process per run)"),
                              (True, "InteractiveSandboxSession (persistent IPython)")):
        first, trips = await asyncio.to_thread(_measure, interactive, image, p)
        note = f"llm-sandbox {version('llm-sandbox')}, image {image}"
        rows.append(Row("6", f"llm-sandbox {kind}: open + run(`print(1)`)", first, note=note))
        rows.append(Row("6", f"llm-sandbox {kind}: run(`pass`) on an open session", trips))
    return rows
