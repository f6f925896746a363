"""`codeinterp run`: code cells in one fresh sandbox, with every produced file and image saved to a directory.

Two engines share the options, the output directory and the report: ``run_local``
drives the ``sandbox`` library directly (Docker or the unisolated local backend),
and ``run_server`` drives a running gateway through ``gateway.client``. The
terminal is behind the small ``Terminal`` protocol, which the command line implements.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import sandbox

from .client import Client, ClientError
from .notebook import Cell, cell_from_result, image_mime, notebook
from .outcomes import error_code

__all__ = ["EXIT_CODES", "Report", "RunFailed", "RunOptions", "Terminal", "cells_from_json", "run_local",
           "run_server"]

# Exit codes by error code: 1 like Python itself; 124 and 137 as `timeout` and a SIGKILL report them;
# 125 as `docker run` reports its own failures.
EXIT_CODES = {"execution_error": 1, "timeout": 124, "kernel_died": 137, "out_of_memory": 137, "sandbox_error": 125}
LARGE_UPLOAD = 8 << 20  # smaller uploads are quick enough to need no progress display
LABELS_ENV = "CODEINTERP_CONTAINER_LABELS"


class RunFailed(Exception):
    """The platform could not run the code (no Docker, no image, server unreachable): exit 125."""


class Terminal(Protocol):
    def out(self, name: str, text: str) -> None:
        """Write the code's own stdout or stderr text, as it arrives."""

    def note(self, text: str) -> None:
        """One line from codeinterp itself, on stderr."""

    def step(self, label: str) -> contextlib.AbstractContextManager[None]:
        """A long step: a spinner on a terminal, a plain line otherwise."""


@dataclass
class RunOptions:
    cells: Sequence[str]
    outdir: Path
    files: Sequence[Path] = ()
    timeout: float | None = None
    memory: str | None = None
    backend: str = "docker"  # or "local"
    server: str | None = None
    api_key: str | None = None
    notebook: Path | None = None


@dataclass
class Report:
    outdir: Path
    saved: list[Path] = field(default_factory=list)
    errors: list[str | None] = field(default_factory=list)  # one per cell that ran
    duration: float = 0.0

    @property
    def exit_code(self) -> int:
        return max((EXIT_CODES.get(e or "", 0) for e in self.errors), default=0)


class OutDir:
    """The output directory: produced files keep their /mnt/data path; images are numbered."""

    def __init__(self, root: Path, report: Report) -> None:
        self.root, self.report, self.images = root, report, 0

    def file(self, relative: str) -> Path:
        dest = (self.root / relative).resolve()
        if not dest.is_relative_to(self.root.resolve()):  # a path from the sandbox must not escape OUTDIR
            raise RunFailed(f"refusing to save {relative!r} outside {self.root}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest not in self.report.saved:  # a file changed by two cells is saved once, the latest version
            self.report.saved.append(dest)
        return dest

    def image(self, ext: str) -> Path:
        self.images += 1
        name = f"display-{self.images}.{ext}"
        while (self.root / name).exists():  # never overwrite a produced file of the same name
            name = f"display-{self.images}-{secrets.token_hex(2)}.{ext}"
        return self.file(name)


def container_labels(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Labels for the sandbox container: ours, plus JSON from CODEINTERP_CONTAINER_LABELS (tests sweep by it)."""
    raw = (environ if environ is not None else dict(os.environ)).get(LABELS_ENV, "")
    try:
        extra = json.loads(raw) if raw else {}
    except ValueError as exc:
        raise RunFailed(f"{LABELS_ENV} must be a JSON object of strings: {exc}") from exc
    if not isinstance(extra, dict):
        raise RunFailed(f"{LABELS_ENV} must be a JSON object of strings")
    return {"codeinterp.cli": "run", **{str(k): str(v) for k, v in extra.items()}}


def cells_from_json(document: Any) -> list[str]:
    """Code cells from a list of strings, or from OpenAI run steps / tool calls saved as JSON.

    Accepts ``{"data": [...]}`` list objects, run steps (``step_details.tool_calls``), tool calls
    (``code_interpreter.input``) and Responses API items (``type: code_interpreter_call``, ``code``).
    Run steps listed newest first (the API's default order) are put back in the order they ran.
    """
    if isinstance(document, dict) and isinstance(document.get("data"), list):
        document = document["data"]
    if not isinstance(document, list):
        raise ValueError("expected a JSON list of code strings, run steps or tool calls")
    stamps = [item.get("created_at") for item in document if isinstance(item, dict)]
    times = [float(s) for s in stamps if isinstance(s, int | float)]
    if len(times) == len(document) > 1 and all(a >= b for a, b in itertools.pairwise(times)) \
            and times[0] > times[-1]:
        document = list(reversed(document))
    cells: list[str] = []
    for item in document:
        if isinstance(item, str):
            cells.append(item)
        elif isinstance(item, dict):
            details = item.get("step_details")
            calls = details.get("tool_calls", []) if isinstance(details, dict) else [item]
            for call in calls:
                if not isinstance(call, dict):
                    continue
                interpreter = call.get("code_interpreter")
                if isinstance(interpreter, dict) and isinstance(interpreter.get("input"), str):
                    cells.append(interpreter["input"])
                elif call.get("type") == "code_interpreter_call" and isinstance(call.get("code"), str):
                    cells.append(call["code"])
    if not cells:
        raise ValueError("found no code in it (no strings, no code_interpreter.input values)")
    return cells


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


@contextlib.contextmanager
def _upload_step(term: Terminal, path: Path) -> Iterator[None]:
    size = path.stat().st_size
    if size < LARGE_UPLOAD:
        yield
        return
    with term.step(f"uploading {path.name} ({human(size)})"):
        yield


# -- the sandbox library ---------------------------------------------------------------


async def run_local(options: RunOptions, term: Terminal) -> Report:
    report = Report(options.outdir)
    out = OutDir(options.outdir, report)
    limits = sandbox.Limits(memory=options.memory or "1g", timeout=options.timeout or sandbox.Limits.timeout)
    backend: sandbox.Backend
    if options.backend == "local":
        backend = sandbox.LocalBackend()
    else:
        backend = sandbox.DockerBackend(sandbox.DockerConfig(labels=container_labels()))
    cells: list[Cell] = []
    started = time.monotonic()
    try:
        with term.step(f"starting the sandbox ({options.backend})"):
            session = await sandbox.Session.start(backend, f"cli-{secrets.token_hex(6)}", limits=limits)
        try:
            for path in options.files:
                with _upload_step(term, path), open(path, "rb") as handle:
                    await session.write_file(path.name, handle)
            for code in options.cells:
                result = await session.execute(code, timeout=options.timeout,
                                               on_output=lambda o: _echo(o, term, out))
                for info in result.files:
                    await session.export_file(info.path, out.file(info.path))
                cells.append(cell_from_result(code, result))
                report.errors.append(error_code(result.outcome))
        finally:
            await session.close()
    except sandbox.SandboxError as exc:
        raise RunFailed(str(exc)) from exc
    finally:
        await backend.aclose()
    report.duration = time.monotonic() - started
    if options.notebook is not None:
        options.notebook.write_text(json.dumps(notebook(cells), indent=1) + "\n")
    return report


def _echo(output: sandbox.Output, term: Terminal, out: OutDir) -> None:
    """Show one output as it arrives; an image is saved at once and named."""
    if isinstance(output, sandbox.Stream):
        term.out(output.name, output.text)
    elif isinstance(output, sandbox.ExecutionError):
        term.out("stderr", output.text + "\n")
    elif isinstance(output, sandbox.Notice):
        term.note(output.text)
    else:
        image = output.image
        if image is not None:
            dest = out.image(image[0])
            dest.write_bytes(image[1])
            term.note(f"image saved to {dest}")
        elif output.text is not None:
            term.out("stdout", output.text + "\n")


# -- a running gateway -------------------------------------------------------------------


def run_server(options: RunOptions, term: Terminal) -> Report:
    report = Report(options.outdir)
    out = OutDir(options.outdir, report)
    started = time.monotonic()
    try:
        with Client(options.server or "", api_key=options.api_key) as api:
            with term.step(f"starting a sandbox on {options.server}"):
                container_id = str(api.create_container("codeinterp-run", memory_limit=options.memory)["id"])
            try:
                for path in options.files:
                    with _upload_step(term, path):
                        api.upload_container_file(container_id, path)
                for code in options.cells:
                    call = _stream_call(api, container_id, code, options.timeout, term)
                    _save_call(api, call, out, term)
                    failed = call.get("status") == "failed"
                    report.errors.append("sandbox_error" if failed else (call.get("error") or {}).get("code"))
                if options.notebook is not None:
                    document = api.notebook(container_id=container_id)
                    options.notebook.write_text(json.dumps(document, indent=1) + "\n")
            finally:
                api.delete_container(container_id)
    except ClientError as exc:
        raise RunFailed(str(exc)) from exc
    report.duration = time.monotonic() - started
    return report


def _stream_call(api: Client, container_id: str, code: str, timeout: float | None,
                 term: Terminal) -> dict[str, Any]:
    for event in api.stream_call(container_id, code, timeout=timeout):
        if "status" in event:  # the completed call ends the stream
            return event
        for item in event["code_interpreter"].get("outputs", []):
            if item.get("type") == "logs":
                term.out("stdout", item["logs"])  # the gateway's logs merge stdout and stderr
    raise RunFailed("the server ended the stream before the call completed")


def _save_call(api: Client, call: dict[str, Any], out: OutDir, term: Terminal) -> None:
    for item in call["code_interpreter"]["outputs"]:
        if item.get("type") != "image":
            continue
        dest = out.image("png")
        api.download_file(item["image"]["file_id"], dest)
        if image_mime(dest.read_bytes()[:8]) == "image/jpeg":
            jpeg = dest.with_suffix(".jpg")
            dest.rename(jpeg)
            out.report.saved[out.report.saved.index(dest)] = jpeg
            dest = jpeg
        term.note(f"image saved to {dest}")
    for entry in call.get("files") or []:
        api.download_file(entry["file_id"], out.file(entry["path"].removeprefix("/mnt/data/")))
