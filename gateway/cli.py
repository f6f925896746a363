"""The `codeinterp` command line."""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import click

__all__ = ["main"]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Console:
    """The terminal: live code output, notes, and long steps (a spinner on a TTY, plain lines otherwise)."""

    def __init__(self, err: TextIO | None = None) -> None:
        self.err = err or sys.stderr
        self.interactive = self.err.isatty()

    def out(self, name: str, text: str) -> None:
        stream = sys.stdout if name == "stdout" else self.err
        stream.write(text)
        stream.flush()

    def note(self, text: str) -> None:
        click.echo(f"codeinterp: {text}", err=True)

    def line(self, text: str) -> None:
        """A progress line that replaces the previous one on a terminal."""
        if self.interactive:
            width = shutil.get_terminal_size().columns - 1
            click.echo(f"\r\033[K{text[:width]}", nl=False, err=True)
        else:
            click.echo(text, err=True)

    def end_line(self) -> None:
        if self.interactive:
            click.echo("", err=True)

    @contextlib.contextmanager
    def step(self, label: str) -> Iterator[None]:
        started = time.monotonic()
        if not self.interactive:
            click.echo(f"codeinterp: {label} ...", err=True)
            yield
            click.echo(f"codeinterp: {label}: done in {time.monotonic() - started:.1f} s", err=True)
            return
        done = threading.Event()

        def spin() -> None:  # a thread, so the spinner turns while the event loop waits on Docker
            for frame in itertools.cycle("|/-\\"):
                self.line(f"{frame} {label} ({time.monotonic() - started:.0f} s)")
                if done.wait(0.1):
                    return

        spinner = threading.Thread(target=spin, daemon=True)
        spinner.start()
        try:
            yield
        finally:
            done.set()
            spinner.join()
            self.line(f"{label}: done in {time.monotonic() - started:.1f} s")
            self.end_line()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """codeinterp: a self-hosted, sandboxed code interpreter."""


@main.command()
@click.option("--host", default=None, help="Address to bind (default 127.0.0.1; CODEINTERP_HOST).")
@click.option("--port", type=int, default=None, help="Port (default 8000; CODEINTERP_PORT).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Database and file store directory (default ./data; CODEINTERP_DATA_DIR).")
@click.option("--log-level", default="INFO", show_default=True)
def serve(host: str | None, port: int | None, data_dir: Path | None, log_level: str) -> None:
    """Run the gateway: the OpenAI-shaped HTTP API over the sandbox."""
    import uvicorn

    from .composition import Gateway
    from .logs import configure_logging
    from .settings import Settings

    overrides = {k: v for k, v in {"host": host, "port": port, "data_dir": data_dir}.items() if v is not None}
    settings = Settings(**overrides)  # type: ignore[arg-type]
    if not settings.api_keys and not _loopback(settings.host):
        raise click.ClickException(
            f"refusing to bind {settings.host} without API keys: anyone who can reach it could run code. "
            "Set CODEINTERP_API_KEYS=key1,key2 or bind 127.0.0.1.")
    configure_logging(log_level)
    app = Gateway(settings).app()
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level.lower(), access_log=False,
                timeout_graceful_shutdown=int(settings.shutdown_grace))


@main.command(context_settings={"show_default": True})
@click.argument("script", required=False, type=click.File("r"))
@click.option("-f", "--file", "files", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A file to put in /mnt/data (repeatable).")
@click.option("-o", "--outdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to save produced files and images  [default: ./codeinterp-out/<timestamp>/]")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds per cell  [default: 60]")
@click.option("--memory", default=None, help="Memory limit, e.g. 512m or 2g  [default: 1g]")
@click.option("--backend", type=click.Choice(["docker", "local"]), default="docker",
              help="docker: the production sandbox; local: a plain kernel subprocess, NO isolation.")
@click.option("--server", metavar="URL", default=None, help="Use a running gateway instead of a local sandbox.")
@click.option("--api-key", envvar="CODEINTERP_API_KEY", default=None, help="Bearer key for --server.")
@click.option("--cells", "cells_file", type=click.File("r"), default=None,
              help="Replay a JSON list of code cells (or OpenAI run steps) in one session.")
@click.option("--notebook", "notebook_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the session as a Jupyter notebook.")
def run(script: Any, files: tuple[Path, ...], outdir: Path | None, timeout: float | None, memory: str | None,
        backend: str, server: str | None, api_key: str | None, cells_file: Any,
        notebook_path: Path | None) -> None:
    """Run SCRIPT (a .py file, or - for stdin) in a fresh sandbox with FILES in /mnt/data.

    Output streams live; every file the code writes to /mnt/data and every image it shows is
    saved to OUTDIR. Exit status: 0 ok, 1 the code raised, 124 timed out, 137 the kernel died
    or ran out of memory, 125 the sandbox could not run it.
    """
    import asyncio
    import json

    import sandbox

    from . import runner

    if (script is None) == (cells_file is None):
        raise click.UsageError("give either SCRIPT (or - for stdin) or --cells FILE.")
    if script is not None:
        cells = [script.read()]
    else:
        try:
            cells = runner.cells_from_json(json.load(cells_file))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--cells") from exc
    if memory is not None:
        try:
            sandbox.parse_size(memory)
        except sandbox.ConfigError as exc:
            raise click.BadParameter(str(exc), param_hint="--memory") from exc
    if backend == "local" and server is None and (problem := _local_kernel_problem()):
        click.echo(f"codeinterp: error: {problem}", err=True)
        sys.exit(runner.EXIT_CODES["sandbox_error"])
    if outdir is None:
        outdir = Path("codeinterp-out") / time.strftime("%Y%m%d-%H%M%S")
    outdir.mkdir(parents=True, exist_ok=True)
    options = runner.RunOptions(cells=cells, outdir=outdir, files=files, timeout=timeout, memory=memory,
                                backend=backend, server=server, api_key=api_key, notebook=notebook_path)
    console = Console()
    try:
        report = runner.run_server(options, console) if server else asyncio.run(runner.run_local(options, console))
    except runner.RunFailed as exc:
        click.echo(f"codeinterp: error: {exc}", err=True)
        sys.exit(runner.EXIT_CODES["sandbox_error"])
    _summary(report, notebook_path)
    sys.exit(report.exit_code)


@main.command("mcp", context_settings={"show_default": True})
@click.option("--backend", type=click.Choice(["docker", "local"]), default="docker",
              help="docker: the production sandbox; local: a plain kernel subprocess, NO isolation.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=60.0,
              help="Seconds a run_python call may take unless it asks for another limit.")
@click.option("--max-timeout", type=click.FloatRange(min=0, min_open=True), default=600.0,
              help="The longest limit a run_python call may ask for.")
@click.option("--memory", default="1g", help="Memory limit of the sandbox, e.g. 512m or 2g.")
@click.option("--image", default=None, help="Kernel image  [default: the one `codeinterp image build` made]")
@click.option("--log-level", default="WARNING")
def mcp_command(backend: str, timeout: float, max_timeout: float, memory: str, image: str | None,
                log_level: str) -> None:
    """Serve MCP over stdio, for desktop agents: run_python and file tools in a sandbox of its own.

    No server is needed. The sandbox starts on the first tool call and is removed when the
    client closes the session (or ends this process with SIGTERM or Ctrl-C).
    """
    import asyncio

    import sandbox

    from .logs import configure_logging
    from .runner import RunFailed, container_labels
    from .toolserver import ToolLimits, serve_stdio
    from .workspaces import SandboxWorkspace

    try:
        sandbox.parse_size(memory)
    except sandbox.ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--memory") from exc
    if backend == "local" and (problem := _local_kernel_problem()):
        raise click.ClickException(problem)
    try:
        labels = {**container_labels(), "codeinterp.cli": "mcp"}
    except RunFailed as exc:
        raise click.ClickException(str(exc)) from exc
    configure_logging(log_level)  # stderr only: stdout carries the protocol

    async def serve() -> None:
        chosen: sandbox.Backend = sandbox.LocalBackend() if backend == "local" else \
            sandbox.DockerBackend(sandbox.DockerConfig(image=image, labels=labels))
        workspace = SandboxWorkspace(chosen, sandbox.Limits(memory=memory, timeout=timeout), labels)
        try:
            await serve_stdio(workspace, ToolLimits(timeout, max(timeout, max_timeout)))
        finally:
            await chosen.aclose()

    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        asyncio.run(serve())


def _local_kernel_problem() -> str | None:
    """What to install when the ``local`` extra is missing from this Python; None when it is there."""
    import importlib.util

    needed = (("ipykernel", "ipykernel_launcher"), ("matplotlib-inline", "matplotlib_inline"))
    missing = [name for name, module in needed if importlib.util.find_spec(module) is None]
    if not missing:
        return None
    return (f"--backend local runs a kernel in this Python ({sys.executable}), which lacks {', '.join(missing)}; "
            "install it with: pip install 'codeinterp[local]'")


def _summary(report: Any, notebook_path: Path | None) -> None:
    from .runner import human

    rows = [(str(p.relative_to(report.outdir.resolve())), human(p.stat().st_size)) for p in report.saved
            if p.exists()]
    width = max([len("file"), *(len(name) for name, _ in rows)])
    lines = [f"  {'file':<{width}}  {'size':>9}"] if rows else []
    lines += [f"  {name:<{width}}  {size:>9}" for name, size in rows]
    failed = [f"cell {i + 1}: {e}" for i, e in enumerate(report.errors) if e]
    cells = f"{len(report.errors)} cell{'s' * (len(report.errors) != 1)}"
    lines.append(f"{cells}, {len(rows)} file{'s' * (len(rows) != 1)} saved to {report.outdir}, "
                 f"{report.duration:.1f} s, " + ("; ".join(failed) if failed else "ok"))
    if notebook_path is not None:
        lines.append(f"notebook: {notebook_path}")
    click.echo("\n".join(["", *lines]), err=True)


@main.group()
def image() -> None:
    """Kernel images."""


@image.command("build")
@click.option("--profile", type=click.Choice(["default", "datascience"]), default="default", show_default=True)
@click.option("--force", is_flag=True, help="Rebuild even when an image with the current hash exists.")
def image_build(profile: str, force: bool) -> None:
    """Build the kernel image (idempotent: does nothing when it is up to date)."""
    import sandbox

    console = Console()
    try:
        tag = sandbox.build_kernel_image(sandbox.ImageSpec(profile=profile), progress=console.line, force=force)
    except sandbox.SandboxError as exc:
        console.end_line()
        raise click.ClickException(str(exc)) from exc
    console.end_line()
    click.echo(tag)


@main.command()
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
def doctor(data_dir: Path | None) -> None:
    """Check Docker, the kernel image, the sandbox runtime and the data dir, and say what to fix."""
    import asyncio
    import os

    import sandbox

    from .settings import Settings

    problems = 0

    def report(ok: bool, what: str, fix: str) -> None:
        nonlocal problems
        click.echo(f"[{'ok' if ok else 'FAIL'}] {what}" + ("" if ok else f"\n       fix: {fix}"))
        problems += not ok

    backend = sandbox.DockerBackend()
    docker_ok = asyncio.run(backend.ping())
    where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    report(docker_ok, f"Docker engine reachable at {where}",
           "run scripts/docker-up.sh (or point DOCKER_HOST at a running engine)")
    tag = sandbox.default_image()
    report(docker_ok and sandbox.image_exists(tag), f"kernel image {tag}",
           "run `codeinterp image build`" if docker_ok else "start Docker first, then run `codeinterp image build`")
    if docker_ok:
        _doctor_runtime(Settings().runtime, report)
    path = (data_dir or Path(os.environ.get("CODEINTERP_DATA_DIR", "./data"))).resolve()
    writable = os.access(path if path.exists() else path.parent, os.W_OK)
    report(writable, f"data dir {path} writable", f"create it or choose --data-dir (mkdir -p {path})")
    if problems:
        sys.exit(1)
def _doctor_runtime(runtime: str, report: Callable[[bool, str, str], None]) -> None:
    """The runtimes Docker has, and whether the one sandboxes use (CODEINTERP_RUNTIME) is fit for them."""
    import sandbox

    try:
        engine = sandbox.docker_runtimes()
    except sandbox.BackendUnavailable as exc:
        report(False, "Docker's runtimes", str(exc))
        return
    names = ", ".join(f"{n} (default)" if n == engine.default else n for n in sorted(engine.runtimes))
    click.echo(f"[info] Docker runtimes: {names}")
    check = sandbox.check_runtime(runtime or None, engine)
    source = "CODEINTERP_RUNTIME" if runtime else "Docker's default; CODEINTERP_RUNTIME=runsc for gVisor"
    what = f"sandbox runtime {check.runtime} ({source})"
    if check.ok and check.gvisor:
        what += ": gVisor, registered with --network=none"
    report(check.ok, what if check.ok else f"{what}: {check.problem}", check.fix or "")


if __name__ == "__main__":
    main()
