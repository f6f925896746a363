#!/usr/bin/env python3
"""Register gVisor's runsc in Docker's daemon.json, merging into what is there (stdlib only: it runs
before the virtualenv exists, from docker-up.sh).

    scripts/docker_runtime.py register [--file /etc/docker/daemon.json] [--runsc /usr/bin/runsc]
    scripts/docker_runtime.py experimental   # does the running dockerd serve experimental routes?

`register` adds (or corrects) the runtime "runsc" with the runtime args codeinterp needs, and "experimental": true
(gVisor's checkpoint, for hibernating idle sandboxes, needs it). Every other key is kept as it was. Prints
"changed" or "unchanged" and writes the file only when it changes, atomically, so that a dockerd
started at the same moment never reads half a file.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

# --network=none: Docker's `--network none` leaves the container in the root network namespace as far as
# runsc can tell, and runsc refuses to start there unless it makes no network itself.
# --platform=ptrace: the kvm platform hangs at 100 % CPU on this kind of host.
# --oci-seccomp: without it runsc ignores the container's seccomp profile. Release 20221219 turns every
# SCMP_ACT_ERRNO into EPERM (errnoRet is ignored), so the profile codeinterp sends to runsc has no clone3
# rule (EPERM there would stop glibc from falling back to clone); see sandbox/_seccomp.py and SECURITY.md.
RUNSC_ARGS = ["--network=none", "--platform=ptrace", "--oci-seccomp"]


def merged(config: dict[str, Any], runsc: str) -> dict[str, Any]:
    out = dict(config)
    runtimes = dict(out.get("runtimes") or {})
    runtimes["runsc"] = {**(runtimes.get("runsc") or {}), "path": runsc, "runtimeArgs": list(RUNSC_ARGS)}
    out["runtimes"] = runtimes
    out["experimental"] = True
    return out


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.path)


def experimental() -> int:
    """Print whether the live daemon runs with experimental features.

    `docker info` reports the file's value right after a SIGHUP, but the API keeps the value dockerd
    started with (the checkpoint routes answer "experimental feature is disabled"); /_ping's
    Docker-Experimental header tells the truth.
    """
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        print(f"only a unix DOCKER_HOST can be checked, not {host}", file=sys.stderr)
        return 2
    conn = _UnixConnection(host.removeprefix("unix://"))
    try:
        conn.request("GET", "/_ping")
        value = conn.getresponse().getheader("Docker-Experimental", "false")
    except OSError as exc:
        print(f"Docker is not reachable at {host} ({exc})", file=sys.stderr)
        return 2
    finally:
        conn.close()
    print(value.lower())
    return 0


def register(args: argparse.Namespace) -> int:
    runsc = args.runsc or shutil.which("runsc")
    if not runsc:
        print("runsc is not installed (apt-get install runsc)", file=sys.stderr)
        return 2
    try:
        text = args.file.read_text()
    except FileNotFoundError:
        text = ""
    try:
        config = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        print(f"{args.file} is not valid JSON ({exc}); fix it by hand, nothing was changed", file=sys.stderr)
        return 2
    if not isinstance(config, dict):
        print(f"{args.file} does not hold a JSON object; fix it by hand, nothing was changed", file=sys.stderr)
        return 2
    new = merged(config, runsc)
    if new == config:
        print("unchanged")
        return 0
    args.file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=args.file.parent, prefix=".daemon.json.")
    with os.fdopen(fd, "w") as out:
        json.dump(new, out, indent=2)
        out.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, args.file)
    print("changed")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    reg = commands.add_parser("register", help="merge the runsc runtime and experimental mode into daemon.json")
    reg.add_argument("--file", type=Path, default=Path(os.environ.get("DOCKER_DAEMON_JSON",
                                                                      "/etc/docker/daemon.json")))
    reg.add_argument("--runsc", default=None, help="the runsc binary (default: found on PATH)")
    commands.add_parser("experimental", help="print true when the running dockerd has experimental features")
    args = parser.parse_args(argv)
    return register(args) if args.command == "register" else experimental()


if __name__ == "__main__":
    sys.exit(main())
