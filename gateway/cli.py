"""The `codeinterp` command line."""

from __future__ import annotations

import ipaddress
import shutil
import sys
from pathlib import Path

import click

__all__ = ["main"]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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


@main.group()
def image() -> None:
    """Kernel images."""


@image.command("build")
@click.option("--profile", type=click.Choice(["default", "datascience"]), default="default", show_default=True)
@click.option("--force", is_flag=True, help="Rebuild even when an image with the current hash exists.")
def image_build(profile: str, force: bool) -> None:
    """Build the kernel image (idempotent: does nothing when it is up to date)."""
    import sandbox

    interactive = sys.stderr.isatty()

    def progress(line: str) -> None:
        if interactive:
            click.echo(f"\r\033[K{line[:shutil.get_terminal_size().columns - 1]}", nl=False, err=True)
        else:
            click.echo(line, err=True)

    try:
        tag = sandbox.build_kernel_image(sandbox.ImageSpec(profile=profile), progress=progress, force=force)
    except sandbox.SandboxError as exc:
        raise click.ClickException(str(exc)) from exc
    if interactive:
        click.echo("", err=True)
    click.echo(tag)


@main.command()
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
def doctor(data_dir: Path | None) -> None:
    """Check Docker, the kernel image and the data dir, and say what to fix."""
    import asyncio
    import os

    import sandbox

    problems = 0

    def report(ok: bool, what: str, fix: str) -> None:
        nonlocal problems
        click.echo(f"[{'ok' if ok else 'FAIL'}] {what}" + ("" if ok else f"\n       fix: {fix}"))
        problems += not ok

    backend = sandbox.DockerBackend()
    docker_ok = asyncio.run(backend.ping())
    report(docker_ok, "Docker engine reachable", "run scripts/docker-up.sh")
    tag = sandbox.default_image()
    report(docker_ok and sandbox.image_exists(tag), f"kernel image {tag}", "run `codeinterp image build`")
    path = (data_dir or Path(os.environ.get("CODEINTERP_DATA_DIR", "./data"))).resolve()
    writable = os.access(path if path.exists() else path.parent, os.W_OK)
    report(writable, f"data dir {path} writable", f"create it or choose --data-dir (mkdir -p {path})")
    if problems:
        sys.exit(1)
if __name__ == "__main__":
    main()
