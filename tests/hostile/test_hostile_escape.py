"""Escape and leaks, over HTTP against a live server: privileges, secrets, and /mnt/data entries made
by the code (symlinks, hardlinks, FIFOs, devices, races, prepared names, shadowing modules)."""

from __future__ import annotations

import platform
import select
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import sandbox
from tests.gateway.gateway_support import RUN_LABEL, ServerFactory, ServerProcess
from tests.hostile.hostile_support import call, logs_of, new_container
from tests.runtime_support import UNDER_GVISOR, skip_under_gvisor

pytestmark = [pytest.mark.docker, pytest.mark.hostile]

SECRET_KEY = "sk-hostile-secret-0123456789abcdef"


@pytest.fixture(scope="module")
def server(module_servers: ServerFactory) -> ServerProcess:
    return module_servers(env={"CODEINTERP_API_KEYS": SECRET_KEY})


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120, headers={"Authorization": f"Bearer {SECRET_KEY}"}) as c:
        yield c


@pytest.fixture(scope="module")
def box(http: httpx.Client) -> str:
    return new_container(http)


def host_addresses() -> list[str]:
    """Every IPv4 address of this host (loopback, Docker's bridge, the uplink, test namespaces' veths)."""
    found = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True).stdout
    return sorted({line.split()[3].split("/")[0] for line in found.splitlines()})


class HostListeners:
    """A TCP and a UDP socket bound to 0.0.0.0 on the host, counting whatever reaches them."""

    def __init__(self) -> None:
        self.tcp = socket.socket()
        self.tcp.bind(("0.0.0.0", 0))  # every address, as a careless host service would
        self.tcp.listen(8)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("0.0.0.0", 0))
        self.hits: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.tcp, self.udp], [], [], 0.2)
            for sock in ready:
                if sock is self.tcp:
                    conn, peer = sock.accept()
                    self.hits.append(f"tcp from {peer}")
                    conn.close()
                else:
                    _, peer = sock.recvfrom(4096)
                    self.hits.append(f"udp from {peer}")

    def close(self) -> list[str]:
        self._stop.set()
        self._thread.join(5)
        self.tcp.close()
        self.udp.close()
        return self.hits


PROBE = """
import socket
def attempt(fn):
    try:
        fn()
        return 'OPEN'
    except OSError as exc:
        return type(exc).__name__
def tcp(host, port):
    s = socket.socket(); s.settimeout(3); s.connect((host, port)); s.close()
def udp(host, port, payload=b'x'):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
    s.sendto(payload, (host, port)); s.recvfrom(512)  # an answer is what would show a path
# A DNS query for a reserved name (RFC 2606), as a resolver would send it.
QUERY = bytes.fromhex('abcd01000001000000000000') + b'\\x0bcodeinterp\\x07invalid\\x00\\x00\\x01\\x00\\x01'
for host in {hosts!r}:
    print('host', host, 'tcp', attempt(lambda: tcp(host, {tcp_port})), 'udp', attempt(lambda: udp(host, {udp_port})),
          'dns', attempt(lambda: udp(host, {udp_port}, QUERY)), 'gateway', attempt(lambda: tcp(host, {gateway_port})),
          'neighbour', attempt(lambda: tcp(host, {neighbour_port})))
print('resolver', attempt(lambda: socket.getaddrinfo('codeinterp.invalid', 80)))
print('ifaces', sorted(n for _, n in socket.if_nameindex()))
"""

# Listens inside a sandbox on every address, in a thread that outlives the call; a later call reports.
NEIGHBOUR = """
import socket, threading
server = socket.socket(); server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(('0.0.0.0', {port})); server.listen(8); accepted = []
def serve():
    while True:
        accepted.append(server.accept()[1])
threading.Thread(target=serve, daemon=True).start()
print('listening')
"""


def test_no_network_at_all(http: httpx.Client, server: ServerProcess) -> None:
    """No egress, no host, no gateway, no neighbour: proven against listeners this test owns.

    Every attempt targets this host (a TCP and a UDP listener on 0.0.0.0, tried on each of its addresses,
    whatever the bridge), the gateway's own port, and another sandbox listening on every address; no
    outside address is ever named. The sandbox's only interface is loopback, so nothing can leave it.
    """
    listeners = HostListeners()
    neighbour_port = 8765
    neighbour = new_container(http)
    prober = new_container(http)
    try:
        assert logs_of(call(http, neighbour, NEIGHBOUR.format(port=neighbour_port))) == "listening\n"
        hosts = [*host_addresses(), "127.0.0.1"]
        code = PROBE.format(hosts=hosts, tcp_port=listeners.tcp.getsockname()[1],
                            udp_port=listeners.udp.getsockname()[1], gateway_port=server.port,
                            neighbour_port=neighbour_port)
        out = logs_of(call(http, prober, code, timeout=120))
        accepted = logs_of(call(http, neighbour, "print('accepted', accepted)"))
    finally:
        hits = listeners.close()
        for box in (neighbour, prober):
            http.delete(f"/v1/containers/{box}")
    assert hits == [], f"the host's 0.0.0.0 listeners were reached from a sandbox: {hits}"
    assert accepted == "accepted []\n", f"one sandbox reached another: {accepted}"
    assert "OPEN" not in out, out
    assert all(f"host {h} " in out for h in hosts), out  # every address was tried
    assert "resolver gaierror" in out, out
    assert "ifaces ['lo']" in out, out


def test_no_capabilities_and_privileged_operations_fail(http: httpx.Client, box: str) -> None:
    code = r"""
import ctypes, os, subprocess
status = open('/proc/self/status').read().splitlines()
print('capeff', [l.split()[1] for l in status if l.startswith('CapEff')][0])
libc = ctypes.CDLL(None, use_errno=True)
print('mount', libc.mount(b'none', b'/tmp', b'tmpfs', 0, None))
try:
    os.mknod('/mnt/data/null', 0o20666, os.makedev(1, 3))
    print('mknod ok')
except PermissionError:
    print('mknod EPERM')
su = subprocess.run(['su', '-c', 'id -u'], capture_output=True, text=True, input='', timeout=10)
print('su', su.returncode, su.stdout.strip() or '-')
print('uid', os.getuid(), os.geteuid())
"""
    out = logs_of(call(http, box, code))
    assert "capeff 0000000000000000" in out and "mount -1" in out, out
    assert "mknod EPERM" in out and "uid 1000 1000" in out, out
    assert "su 1 -" in out, out  # setuid binaries run, but never as root (no-new-privileges)


def test_no_new_privileges_and_no_user_namespaces(http: httpx.Client, box: str) -> None:
    code = r"""
import ctypes
status = open('/proc/self/status').read().splitlines()
print('nonewprivs', ([l.split()[1] for l in status if l.startswith('NoNewPrivs')] or ['absent'])[0])
print('unshare', ctypes.CDLL(None).unshare(0x10000000 | 0x00020000))  # CLONE_NEWUSER | CLONE_NEWNS
"""
    out = logs_of(call(http, box, code))
    assert "unshare -1" in out, out  # refused by the seccomp profile, under gVisor too (runsc --oci-seccomp)
    # gVisor's /proc/self/status has no NoNewPrivs line; its setuid test is in the privileges test above.
    assert ("nonewprivs absent" if UNDER_GVISOR else "nonewprivs 1") in out, out


def test_the_root_filesystem_is_read_only(http: httpx.Client, box: str) -> None:
    code = r"""
import errno
root = [line.split() for line in open('/proc/mounts') if line.split()[1] == '/'][-1]
print('root-options', root[3].split(',')[0])
for path in ('/etc/planted', '/opt/venv/lib/planted.py', '/usr/lib/planted', '/planted'):
    try:
        open(path, 'w').close()
        print('WROTE', path)
    except OSError as exc:
        print('refused', path, errno.errorcode[exc.errno])
"""
    out = logs_of(call(http, box, code))
    assert "root-options ro" in out and "WROTE" not in out, out


@pytest.mark.skipif(platform.machine() != "x86_64", reason="system call numbers below are x86_64's")
def test_the_seccomp_profile_refuses_the_calls_it_lists(http: httpx.Client, box: str) -> None:
    code = r"""
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
calls = (('keyctl', 250, (0, 0, 0, 0)), ('bpf', 321, (0, 0, 0)), ('perf_event_open', 298, (0, 0, -1, -1, 0)),
         ('userfaultfd', 323, (0,)), ('io_uring_setup', 425, (1, 0)), ('clone3', 435, (0, 0)))
for name, nr, args in calls:
    ret = libc.syscall(nr, *args)
    print(name, ret, errno.errorcode.get(ctypes.get_errno(), '-') if ret < 0 else 'ALLOWED')
"""
    out = logs_of(call(http, box, code)).split("\n")
    for name in ("keyctl", "bpf", "perf_event_open", "userfaultfd", "io_uring_setup"):
        assert f"{name} -1 EPERM" in out, out
    # ENOSYS so that libc falls back to clone, which the filter can inspect (under gVisor, gVisor's own answer)
    assert "clone3 -1 ENOSYS" in out, out


def test_ptrace_reaches_only_the_sandbox_s_own_processes(http: httpx.Client, box: str) -> None:
    code = r"""
import os
pids = [p for p in os.listdir('/proc') if p.isdigit()]
print('uids', sorted({os.stat(f'/proc/{p}').st_uid for p in pids}), 'pid1', open('/proc/1/cmdline').read()[:13])
"""
    out = logs_of(call(http, box, code))
    assert "uids [1000] pid1 /usr/bin/tini" in out, out  # its own PID namespace: nothing else to attach to


# PTRACE_ATTACH to the code's own child: allowed by the kernel (same uid, a descendant, so Yama's scope 1
# too) and by Docker's default seccomp profile. Only our profile refuses it.
PTRACE_PROBE = r"""
import ctypes, errno, os, signal, time
libc = ctypes.CDLL(None, use_errno=True)
try:
    scope = open('/proc/sys/kernel/yama/ptrace_scope').read().strip()
except OSError:
    scope = 'none'
child = os.fork()
if child == 0:
    time.sleep(60)
    os._exit(0)
result = libc.ptrace(16, child, None, None)
err = ctypes.get_errno()
os.kill(child, signal.SIGKILL)
os.waitpid(child, 0)
print('yama', scope, 'attach', result, errno.errorcode.get(err, err) if result else 'ok')
"""


def test_ptrace_of_its_own_child_is_refused_by_the_seccomp_profile(http: httpx.Client, box: str) -> None:
    out = logs_of(call(http, box, PTRACE_PROBE))
    scope = out.split()[1]
    if scope not in ("none", "0", "1"):
        pytest.skip(f"Yama's ptrace_scope is {scope} here: it refuses ptrace itself, so this cannot show ours does")
    assert f"yama {scope} attach -1 EPERM" in out, out


@skip_under_gvisor("Docker's default profile cannot start a kernel under runsc 20221219 (its clone3 ENOSYS "
                   "becomes EPERM, so no thread starts); DockerConfig refuses seccomp='docker' with runsc")
async def test_the_ptrace_probe_succeeds_under_docker_s_default_profile(run_id: str) -> None:
    backend = sandbox.DockerBackend(sandbox.DockerConfig(labels={RUN_LABEL: run_id}, seccomp="docker"))
    try:
        async with await sandbox.Session.start(backend, f"ptrace-control-{run_id[:8]}") as session:
            result = await session.execute(PTRACE_PROBE)
    finally:
        await backend.aclose()
    assert result.stdout.endswith("attach 0 ok\n"), result.logs  # so the refusal above is the profile's doing


def test_no_gateway_secret_reaches_the_sandbox(http: httpx.Client, box: str) -> None:
    code = r"""
import os
found = []
for root in ('/etc', '/home', '/tmp', '/mnt', '/run', '/opt/codeinterp', '/var'):
    for dirpath, dirs, files in os.walk(root):
        for name in files:
            try:
                with open(os.path.join(dirpath, name), 'rb') as f:
                    if SECRET in f.read(1 << 20):
                        found.append(os.path.join(dirpath, name))
            except OSError:
                pass
env1 = open('/proc/1/environ', 'rb').read()
print('env', SECRET.decode() in str(os.environ), 'pid1', SECRET in env1, 'files', found)
print('codeinterp-vars', sorted(k for k in os.environ if 'CODEINTERP' in k or 'KEY' in k))
print('docker.sock', [p for p in ('/var/run/docker.sock', '/run/docker.sock') if os.path.exists(p)])
print('kernel-dir', sorted(os.listdir('/run/kernel')))
print('work-root', os.path.exists('/tmp/codeinterp'))
""".replace("SECRET", repr(SECRET_KEY.encode()), 1).replace("SECRET", "S")
    code = f"S = {SECRET_KEY.encode()!r}\n" + code.replace(repr(SECRET_KEY.encode()), "S")
    out = logs_of(call(http, box, code))
    assert "env False pid1 False files []" in out, out
    assert "codeinterp-vars []" in out and "docker.sock []" in out and "work-root False" in out, out
    # Only this sandbox's own connection file and sockets: no other sandbox's ipc endpoints.
    assert "kernel-dir ['connection.json', 'k-1', 'k-2', 'k-3', 'k-4', 'k-5', 'subprocess-output']" in out, out


def _files(http: httpx.Client, box: str) -> list[dict[str, object]]:
    listed = http.get(f"/v1/containers/{box}/files", params={"limit": 100})
    assert listed.status_code == 200, listed.text
    return list(listed.json()["data"])


def test_links_fifos_and_devices_never_lead_the_gateway_outside(http: httpx.Client, box: str, bait: Path) -> None:
    secret = bait.read_text()
    code = f"""
import os
os.symlink({str(bait)!r}, '/mnt/data/bait.txt')
os.symlink('/etc/passwd', '/mnt/data/passwd.txt')
os.symlink('/', '/mnt/data/root')
os.symlink('/etc', '/mnt/data/etc')
os.symlink({str(bait.parent)!r}, '/mnt/data/hostdir')
os.mkfifo('/mnt/data/pipe.txt')
open('/mnt/data/real.txt', 'w').write('real')
os.link('/mnt/data/real.txt', '/mnt/data/hard.txt')
try:
    os.link('/etc/hostname', '/mnt/data/cross.txt')
except OSError as exc:
    print('cross-device link refused', exc.errno)
"""
    result = call(http, box, code)
    assert result["status"] == "completed", result
    assert "cross-device link refused 18" in logs_of(result)
    assert sorted(f["path"] for f in result["files"]) == ["/mnt/data/hard.txt", "/mnt/data/real.txt"]  # type: ignore[union-attr,index]
    listed = _files(http, box)
    assert {f["path"] for f in listed} == {"/mnt/data/hard.txt", "/mnt/data/real.txt"}, listed
    for f in listed:
        content = http.get(f"/v1/containers/{box}/files/{f['id']}/content")
        assert content.status_code == 200 and content.content == b"real"
    for f in result["files"]:  # type: ignore[union-attr]
        assert http.get(f"/v1/files/{f['file_id']}/content").content == b"real"  # type: ignore[index]
    deleted = http.delete(f"/v1/containers/{box}/files/{listed[0]['id']}")
    assert deleted.status_code == 200
    assert bait.read_text() == secret  # the host file is untouched
    after = logs_of(call(http, box, "import os\nprint(sorted(os.listdir('/mnt/data')))"))
    assert "bait.txt" in after and "pipe.txt" in after  # the gateway removed nothing it did not list


def test_swapping_a_file_for_a_symlink_in_a_loop_never_yields_host_content(http: httpx.Client, bait: Path) -> None:
    box = new_container(http)
    secret = bait.read_text().encode()
    # race.txt is a plain file when the call ends (so the call lists it and the reads below have an id);
    # only then does the thread start swapping it for a link to the host's bait.
    call(http, box, f"""
import os, threading, time
open('/mnt/data/race.txt', 'w').write('plain')
def swap():
    time.sleep(1)
    while True:
        try:
            with open('/mnt/data/race.tmp', 'w') as f:
                f.write('plain')
            os.replace('/mnt/data/race.tmp', '/mnt/data/race.txt')
            os.symlink({str(bait)!r}, '/mnt/data/race.lnk')
            os.replace('/mnt/data/race.lnk', '/mnt/data/race.txt')
        except OSError:
            pass
threading.Thread(target=swap, daemon=True).start()
""")
    served = 0
    for _ in range(40):
        for f in _files(http, box):
            content = http.get(f"/v1/containers/{box}/files/{f['id']}/content")
            assert secret not in content.content
            served += content.status_code == 200
    result = call(http, box, "import time\ntime.sleep(0.2)\nopen('/mnt/data/other.txt', 'w').write('x')")
    for f in result["files"]:  # type: ignore[union-attr]
        assert secret not in http.get(f"/v1/files/{f['file_id']}/content").content  # type: ignore[index]
    http.delete(f"/v1/containers/{box}")
    assert served > 0  # the race was real: some reads did see the plain file


def test_an_upload_never_writes_through_a_prepared_name(http: httpx.Client, box: str, bait: Path) -> None:
    secret = bait.read_text()
    call(http, box, f"import os\nos.symlink({str(bait)!r}, '/mnt/data/data.csv')\nos.mkdir('/mnt/data/dir.csv')")
    for name in ("data.csv", "dir.csv"):
        up = http.post(f"/v1/containers/{box}/files", files={"file": (name, b"a,b\n1,2\n", "text/csv")})
        assert up.status_code == 200, up.text
        assert up.json()["path"] == f"/mnt/data/{name[:-4]}-1.csv"
    assert bait.read_text() == secret
    out = logs_of(call(http, box, "import os\nprint(os.path.islink('/mnt/data/data.csv'), "
                                  "os.listdir('/mnt/data/dir.csv'))"))
    assert out == "True []\n", out


def test_dropped_modules_cannot_shadow_the_standard_library_after_a_restart(http: httpx.Client) -> None:
    box = new_container(http)
    plant = "raise SystemExit('SHADOWED')\n"
    call(http, box, "import os\nfor d in ('/mnt/data', os.path.expanduser('~'), os.getcwd()):\n"
                    "    for m in ('json', 'os', 'ipykernel_launcher', 'sitecustomize', 'usercustomize'):\n"
                    f"        open(os.path.join(d, m + '.py'), 'w').write({plant!r})\n"
                    "open('/mnt/data/x.pth', 'w').write('import json\\n')")
    died = call(http, box, "import os\nos._exit(1)")
    assert died["error"]["code"] == "kernel_died", died  # type: ignore[index]
    out = logs_of(call(http, box, "import json, os\nprint(json.__file__)\nprint(os.__file__)"))
    assert out == "/usr/lib/python3.11/json/__init__.py\n/usr/lib/python3.11/os.py\n", out
    http.delete(f"/v1/containers/{box}")
