"""LocalBackend: a plain ipykernel subprocess in a temporary directory.

NO ISOLATION. The code runs as you, with your files and your network. It is
for development and fast tests only; never point it at untrusted code. Since
/mnt/data does not exist here, the literal path ``/mnt/data`` in submitted code
is rewritten to the session's temporary data directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from ._backend import KernelHost, MountedFiles, SessionSpec
from ._channel import READ_CHUNK, Pipe
from ._datadir import DataDir
from ._errors import ConfigError, KernelStartError
from ._inside import source
from ._results import KernelExit

__all__ = ["LocalBackend"]


class LocalBackend(MountedFiles):
    """Kernels as subprocesses of this one, with an allowlisted environment."""

    def __init__(self, python: str | None = None, work_root: Path | None = None) -> None:
        self.python = python or sys.executable
        self.work_root = work_root
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._roots: dict[str, Path] = {}
        self._envs: dict[str, dict[str, str]] = {}

    async def start(self, spec: SessionSpec) -> KernelHost:
        if self.python == sys.executable and importlib.util.find_spec("ipykernel") is None:
            raise ConfigError("the local backend needs ipykernel in this Python: "
                              "pip install 'codeinterp[local]'")
        root = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="ci-", dir=self.work_root))
        data = DataDir(root / "data")
        await asyncio.to_thread(data.create)
        host = KernelHost(session_id=spec.session_id, name=str(root), key=secrets.token_hex(32), data=data,
                          code_paths={"/mnt/data": str(data.path)})
        self._roots[host.name] = root
        env = {"HOME": str(root), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
               "MPLBACKEND": "module://matplotlib_inline.backend_inline", **spec.env,
               "CODEINTERP_KERNEL_KEY": host.key}
        await asyncio.to_thread(self._spawn, host.name, root, env)
        return host

    @staticmethod
    def _key(host: KernelHost) -> str:
        return host.name

    def _spawn(self, key: str, root: Path, env: dict[str, str]) -> None:
        try:
            self._procs[key] = subprocess.Popen(
                [self.python, "-I", "-c", source("launcher"), str(root / "run")],
                cwd=root / "data", env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            raise KernelStartError(f"cannot run {self.python}: {exc}; install ipykernel there") from exc
        self._envs[key] = env

    async def connect(self, host: KernelHost) -> Pipe:
        proc = await asyncio.create_subprocess_exec(
            self.python, "-I", "-c", source("relay"), str(Path(host.name) / "run" / "connection.json"),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            limit=1 << 20)
        return _ProcessPipe(proc)

    async def stop(self, host: KernelHost) -> None:
        key = self._key(host)
        proc = self._procs.pop(key, None)
        if proc is not None:
            await asyncio.to_thread(self._kill, proc)
        root = self._roots.pop(key, None)
        self._envs.pop(key, None)
        if root is not None:
            await asyncio.to_thread(shutil.rmtree, root, True)

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    async def interrupt(self, host: KernelHost) -> None:
        proc = self._procs.get(self._key(host))
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGINT)

    async def restart(self, host: KernelHost) -> None:
        key = self._key(host)
        proc = self._procs.get(key)
        if proc is not None:
            await asyncio.to_thread(self._kill, proc)
        await asyncio.to_thread(self._spawn, key, self._roots[key], self._envs[key])

    async def poll(self, host: KernelHost) -> KernelExit | None:
        proc = self._procs.get(self._key(host))
        if proc is None:
            return KernelExit(exit_code=None)
        code = proc.poll()
        return None if code is None else KernelExit(exit_code=code)

    async def aclose(self) -> None:
        for proc in list(self._procs.values()):
            await asyncio.to_thread(self._kill, proc)
        self._procs.clear()


class _ProcessPipe:
    """A relay subprocess's stdin and stdout."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self._proc, self._stdin, self._stdout = proc, proc.stdin, proc.stdout

    async def receive(self) -> bytes:
        return await self._stdout.read(READ_CHUNK)

    async def send(self, data: bytes) -> None:
        self._stdin.write(data)
        await self._stdin.drain()

    async def aclose(self) -> None:
        self._stdin.close()
        with contextlib.suppress(ProcessLookupError):
            self._proc.kill()
        await self._proc.wait()
