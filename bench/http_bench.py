"""Gateway figures over real HTTP: a first call on a new thread (no warm pool yet), and the
round trip of `pass` on a warm thread.

Run: .venv/bin/python -m bench.http_bench [--threads 10] [--round-trips 200]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

import httpx

from .stats import HEADER, row


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(threads: int, round_trips: int) -> None:
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="codeinterp-bench-") as data:
        env = {**os.environ, "CODEINTERP_DATA_DIR": data, "CODEINTERP_CONTAINER_LABELS": '{"codeinterp.bench": "1"}'}
        server = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--port", str(port),
                                   "--log-level", "WARNING"], env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=url, timeout=120) as http:
                for _ in range(300):
                    try:
                        if http.get("/healthz").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    time.sleep(0.1)
                first: list[float] = []
                for i in range(threads):
                    began = time.perf_counter()
                    body = http.post(f"/v1/threads/bench-{i}/code_interpreter/calls", json={"input": "print(1)"}).json()
                    first.append(time.perf_counter() - began)
                    assert body["code_interpreter"]["outputs"] == [{"type": "logs", "logs": "1\n"}], body
                trips: list[float] = []
                for n in range(round_trips + 20):
                    began = time.perf_counter()
                    http.post("/v1/threads/bench-0/code_interpreter/calls", json={"input": "pass"})
                    if n >= 20:
                        trips.append(time.perf_counter() - began)
                for i in range(threads):
                    http.delete(f"/v1/threads/bench-{i}/code_interpreter")
        finally:
            server.terminate()
            server.wait(30)
    print(HEADER)
    print(row("HTTP first call on a new thread, cold (no pool)", first))
    print(row("HTTP call round trip of `pass` on a warm thread", trips))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=10)
    parser.add_argument("--round-trips", type=int, default=200)
    args = parser.parse_args()
    main(args.threads, args.round_trips)
