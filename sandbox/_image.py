"""The kernel image: its content-addressed tag, and how to build it here.

The machines we target reach Debian's mirror and PyPI (through a proxy) but no
container registry, so the base image is made with debootstrap when pulling
fails, and the pip CA bundle of the host is handed to the build.
"""

from __future__ import annotations

import configparser
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ._errors import ImageBuildError

__all__ = ["ImageSpec", "build_kernel_image", "default_image", "image_exists"]

REPO_ROOT = Path(__file__).resolve().parent.parent
_INPUTS = ("Dockerfile.kernel", "kernel_images/requirements.txt", "kernel_images/start-kernel")
_PROFILES = {"default": (), "datascience": ("kernel_images/datascience.txt",)}
_BASE_PULL = "debian:bookworm-slim"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ImageSpec:
    """What an image is made of: the repo files it hashes and its base."""

    root: Path = REPO_ROOT
    profile: str = "default"
    base: str = "codeinterp-base:bookworm"
    repository: str = "codeinterp-kernel"

    def inputs(self) -> tuple[str, ...]:
        if self.profile not in _PROFILES:
            raise ImageBuildError(
                f"unknown image profile {self.profile!r}; choose one of {sorted(_PROFILES)}"
            )
        return _INPUTS + _PROFILES[self.profile]

    @property
    def tag(self) -> str:
        digest = hashlib.sha256(f"{self.base}\0{self.profile}\0".encode())
        for name in self.inputs():
            path = self.root / name
            if not path.is_file():
                raise ImageBuildError(f"image input {path} is missing; is this a full checkout?")
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
        suffix = "" if self.profile == "default" else f"-{self.profile}"
        return f"{self.repository}:{digest.hexdigest()[:12]}{suffix}"


def default_image() -> str:
    """The tag of the default kernel image for this checkout."""
    return ImageSpec().tag


def image_exists(tag: str) -> bool:
    return _run(["docker", "image", "inspect", tag], check=False).returncode == 0


def build_kernel_image(
    spec: ImageSpec | None = None, *, progress: Progress = lambda line: None, force: bool = False
) -> str:
    """Build the kernel image unless one with the current input hash exists."""
    spec = spec or ImageSpec()
    tag = spec.tag
    if image_exists(tag) and not force:
        progress(f"image {tag} is up to date")
        return tag
    _ensure_base(spec.base, progress)
    with tempfile.TemporaryDirectory(prefix="codeinterp-build-") as ctx:
        context = Path(ctx)
        for name in spec.inputs():
            (context / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(spec.root / name, context / name)
        ca = _pip_ca_bundle()
        (context / "pip-ca.pem").write_bytes(ca.read_bytes() if ca else b"")
        progress(f"building {tag} (pip CA bundle: {ca or 'none'})")
        args = ["docker", "build", "-f", "Dockerfile.kernel", "-t", tag,
                "--build-arg", f"BASE_IMAGE={spec.base}",
                "--label", "codeinterp.image=kernel", "--label", f"codeinterp.profile={spec.profile}"]
        if spec.profile != "default":
            args += ["--build-arg", f"EXTRA_REQUIREMENTS={_PROFILES[spec.profile][0]}"]
        _stream([*args, "."], cwd=context, progress=progress, env={"DOCKER_BUILDKIT": "0"})
    progress(f"built {tag}")
    return tag


def _ensure_base(base: str, progress: Progress) -> None:
    if image_exists(base):
        return
    progress(f"pulling {_BASE_PULL}")
    if _run(["docker", "pull", _BASE_PULL], check=False).returncode == 0:
        _run(["docker", "tag", _BASE_PULL, base])
        return
    progress("no registry reachable: making the base image with debootstrap")
    if shutil.which("debootstrap") is None:
        raise ImageBuildError("debootstrap is not installed; run `apt-get install -y debootstrap`")
    mirror, suite = _host_debian_mirror()
    with tempfile.TemporaryDirectory(prefix="codeinterp-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        _stream(["debootstrap", "--variant=minbase", suite, str(rootfs), mirror], progress=progress)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        try:
            _run(["docker", "import", "-", base], stdin=tar.stdout)
        finally:
            if tar.stdout:
                tar.stdout.close()
            tar.wait()
    progress(f"imported {base}")


def _host_debian_mirror() -> tuple[str, str]:
    """The mirror and suite from the host's apt sources, deb822 or one-line."""
    suite = _os_release().get("VERSION_CODENAME", "bookworm")
    deb822 = Path("/etc/apt/sources.list.d/debian.sources")
    candidates = [deb822] if deb822.is_file() else []
    candidates += sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    for path in candidates:
        for stanza in path.read_text().split("\n\n"):
            fields = dict(
                (k.strip(), v.strip())
                for k, _, v in (ln.partition(":") for ln in stanza.splitlines())
                if not k.startswith("#") and v
            )
            uri = fields.get("URIs", "").split()
            if uri and "security" not in uri[0] and suite in fields.get("Suites", "").split():
                return uri[0], suite
    lists = Path("/etc/apt/sources.list")
    if lists.is_file():
        for line in lists.read_text().splitlines():
            match = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line)
            if match and "security" not in match.group(1):
                return match.group(1), match.group(2)
    raise ImageBuildError("could not find a Debian mirror in /etc/apt; configure apt first")


def _os_release() -> dict[str, str]:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return {}
    return {k: v.strip('"') for k, _, v in (ln.partition("=") for ln in text.splitlines()) if v}


def _pip_ca_bundle() -> Path | None:
    """The CA bundle pip on this host uses, from PIP_CERT or pip's config files."""
    if os.environ.get("PIP_CERT") and Path(os.environ["PIP_CERT"]).is_file():
        return Path(os.environ["PIP_CERT"])
    paths = ["/etc/pip.conf", "/etc/xdg/pip/pip.conf",
             os.path.expanduser("~/.pip/pip.conf"), os.path.expanduser("~/.config/pip/pip.conf")]
    found: Path | None = None
    for path in paths:
        parser = configparser.ConfigParser()
        try:
            parser.read(path)
        except configparser.Error:
            continue
        for section in ("global", "install"):
            cert = parser.get(section, "cert", fallback=None)
            if cert and Path(cert).is_file():
                found = Path(cert)
    return found


def _run(args: list[str], *, check: bool = True, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    try:
        result = subprocess.run(args, capture_output=True, **kwargs)  # type: ignore[call-overload]
    except FileNotFoundError as exc:
        raise ImageBuildError(f"{args[0]} is not installed; run `scripts/setup.sh` (Debian) or install it") from exc
    if check and result.returncode != 0:
        raise ImageBuildError(f"{' '.join(args[:3])} failed: {result.stderr.decode(errors='replace')[-2000:]}")
    return result  # type: ignore[no-any-return]


def _stream(args: list[str], *, progress: Progress, cwd: Path | None = None,
            env: dict[str, str] | None = None) -> None:
    tail: list[str] = []
    try:
        proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, text=True, errors="replace")
    except FileNotFoundError as exc:
        raise ImageBuildError(f"{args[0]} is not installed; run `scripts/setup.sh` (Debian) or install it") from exc
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        tail = ([*tail, line])[-30:]
        progress(line)
    if proc.wait() != 0:
        raise ImageBuildError(f"{args[0]} {args[1]} failed (exit {proc.returncode}):\n" + "\n".join(tail))
