"""LocalBackend: a plain ipykernel subprocess in a temporary directory.

NO ISOLATION. The code runs as you, with your files and your network. It is
for development and fast tests only; never point it at untrusted code. Since
/mnt/data does not exist here, the literal path ``/mnt/data`` in submitted code
is rewritten to the session's temporary data directory.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from ._backend import KernelHost, MountedFiles, SessionSpec, connection_file, socket_paths
from ._datadir import DataDir
from ._errors import KernelStartError
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
        root = Path(tempfile.mkdtemp(prefix="ci-", dir=self.work_root))
        data = DataDir(root / "data")
        data.create()
        info = connection_file(str(root / "k"), secrets.token_hex(32))
        (root / "connection.json").write_text(json.dumps(info))
        host = KernelHost(session_id=spec.session_id, name="", connection_info=info, data=data,
                          code_paths={"/mnt/data": str(data.path)})
        key = self._key(host)
        self._roots[key] = root
        env = {"HOME": str(root), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
               "MPLBACKEND": "module://matplotlib_inline.backend_inline", **spec.env}
        self._spawn(key, root, env)
        return host

    @staticmethod
    def _key(host: KernelHost) -> str:
        return str(host.connection_info["ip"])

    def _spawn(self, key: str, root: Path, env: dict[str, str]) -> None:
        try:
            self._procs[key] = subprocess.Popen(
                [self.python, "-m", "ipykernel_launcher", "-f", str(root / "connection.json"),
                 "--HistoryManager.enabled=False"],
                cwd=root / "data", env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            raise KernelStartError(f"cannot run {self.python}: {exc}; install ipykernel there") from exc
        self._envs[key] = env

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
        for path in socket_paths(Path(key)):
            path.unlink(missing_ok=True)
        self._spawn(key, self._roots[key], self._envs[key])

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
