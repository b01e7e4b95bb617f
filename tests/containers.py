"""The container engine the Docker-image tests build and run with (tests/system/test_docker_image.py).

``docker`` where a daemon answers; otherwise Debian's podman, installed through apt when this is root on a
Debian/Ubuntu machine. The Dockerfile is built unchanged; what a machine lacks is handled here, only where it is
missing (README "Docker", ../shared/containers.md):

- crun cannot run in hybrid cgroups and root's default ulimits are refused: podman gets its own containers.conf
  (runtime runc, lower ulimits) through ``CONTAINERS_CONF``; /etc/containers is left alone.
- no registry: when ``python:3.11-slim`` cannot be pulled, a stand-in of the same Debian and Python is made with
  mmdebstrap and imported under that name (removed again afterwards).
- PyTorch's CPU wheel index unreachable: ``TORCH_INDEX`` names this machine's package index instead (the image
  then records a CUDA build in /app/TORCH_BUILD, which the test reports).
- a TLS-intercepting network: the host's CA bundle is mounted into the build (podman only).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from conftest import PROJECT_ROOT

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
PODMAN_PACKAGES = ["podman", "buildah", "runc", "mmdebstrap"]
CONTAINERS_CONF = """[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
"""
PULL_TIMEOUT_S = 90
INFO_TIMEOUT_S = 300   # podman's first `info` sets up its storage; on a starved machine that took over 60 s
STAND_IN_LABEL = "attnviz.stand-in"   # marks the base image this harness made, so a later run removes it


class Unavailable(Exception):
    """No container engine can be used on this machine; the message says why and how to get one."""


def run(cmd: list[str], timeout: float = 600, env: dict[str, str] | None = None,
        check: bool = False) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} -> {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def _apt_install(packages: list[str]) -> bool:
    """Install Debian packages when this process may (root, apt-get present); True when it worked."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-qq"], env=env, timeout=600)
    return run(["apt-get", "install", "-y", "-qq", *packages], env=env, timeout=900).returncode == 0


@dataclass
class Engine:
    """One container CLI (docker or podman) with the environment its commands need here."""

    name: str
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    imported: list[str] = field(default_factory=list)   # images this harness created besides the test image
    workdir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))
    build_log: str = ""

    def __call__(self, *args: str, timeout: float = 600, check: bool = False) -> subprocess.CompletedProcess:
        return run([self.name, *args], timeout=timeout, env=self.env, check=check)

    @property
    def is_podman(self) -> bool:
        return self.name == "podman"

    def has_image(self, ref: str) -> bool:
        return self("image", "inspect", ref, timeout=60).returncode == 0

    def health(self, container: str) -> str:
        """'healthy' / 'unhealthy' / 'starting': podman runs the check on demand (its timer needs systemd),
        docker reports its own schedule."""
        if self.is_podman:
            result = self("healthcheck", "run", container, timeout=60)
            return "healthy" if result.returncode == 0 else (result.stdout + result.stderr).strip() or "unhealthy"
        return self("inspect", "--format", "{{.State.Health.Status}}", container, timeout=30).stdout.strip()


def _docker_daemon_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return run(["docker", "info"], timeout=INFO_TIMEOUT_S).returncode == 0
    except subprocess.TimeoutExpired:   # a client with no daemon behind it may wait instead of failing
        return False


def find_engine(workdir: Path) -> Engine:
    """docker with a daemon, else podman (installed when possible); raises Unavailable otherwise."""
    if _docker_daemon_answers():
        return Engine("docker", workdir=workdir)
    if not shutil.which("podman") or not shutil.which("runc"):
        _apt_install(PODMAN_PACKAGES)
    if not shutil.which("podman"):
        raise Unavailable("no docker daemon answers and podman is not installed (as root on Debian/Ubuntu the "
                          "test installs it: apt-get install -y " + " ".join(PODMAN_PACKAGES) + ")")
    conf = workdir / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    engine = Engine("podman", env=dict(os.environ, CONTAINERS_CONF=str(conf)), workdir=workdir)
    try:
        info = engine("info", timeout=INFO_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise Unavailable(f"podman info gave no answer within {INFO_TIMEOUT_S} s") from None
    if info.returncode != 0:
        raise Unavailable(f"podman info fails: {info.stderr.strip()[-500:]}")
    return engine


def base_image(dockerfile: Path = PROJECT_ROOT / "Dockerfile") -> str:
    found = re.search(r"^FROM\s+(\S+)", dockerfile.read_text(), re.M)
    assert found, "Dockerfile has no FROM line"
    return found.group(1)


def _debian_mirror() -> str:
    """The first Debian archive this machine's apt uses (the stand-in base comes from the same place)."""
    for source in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if source.is_file():
            found = re.search(r"(?:URIs:|^deb)\s+(\S*debian)\s", source.read_text(), re.M)
            if found:
                return found.group(1)
    return "http://deb.debian.org/debian"


def ensure_base(engine: Engine, workdir: Path) -> bool:
    """Make the Dockerfile's base image available; True when it is a stand-in (build then with --pull=never).

    The stand-in: Debian 12 minbase with Python 3.11, the distribution and Python the real python:3.11-slim
    has. Its name is the real one's, so the Dockerfile is built unchanged.
    """
    ref = base_image()
    if engine.has_image(ref):
        label = engine("image", "inspect", "--format", "{{index .Config.Labels \"" + STAND_IN_LABEL + "\"}}", ref)
        if label.stdout.strip() == "1":   # made by an earlier run that kept its images
            engine.imported.append(ref)
            return True
        return False
    try:
        if engine("pull", ref, timeout=PULL_TIMEOUT_S).returncode == 0:
            return False
    except subprocess.TimeoutExpired:
        pass
    assert re.fullmatch(r"python:3\.11-slim", ref), f"no stand-in for {ref}: only python:3.11-slim (Debian 12)"
    if not shutil.which("mmdebstrap") and not _apt_install(["mmdebstrap"]):
        raise Unavailable(f"{ref} cannot be pulled and mmdebstrap (for a stand-in) is not installed")
    tar = workdir / "base.tar"
    run(["mmdebstrap", "--variant=minbase", "--include=python3,python3-venv,python3-pip,passwd,ca-certificates",
         "bookworm", str(tar), _debian_mirror()], timeout=900, check=True)
    name = ref if "/" in ref else f"docker.io/library/{ref}"
    engine("import", "--change", f"LABEL {STAND_IN_LABEL}=1", str(tar), name, timeout=300, check=True)
    tar.unlink()
    engine.imported.append(name)
    return True


def _index_answers(index: str) -> bool:
    return run([sys.executable, str(PROJECT_ROOT / "docker" / "torch_build.py"), "check", index],
               timeout=120).returncode == 0


def torch_index() -> str | None:
    """None when the Dockerfile's default (PyTorch's CPU wheels) answers, else this machine's package index."""
    if _index_answers(CPU_INDEX):
        return None
    configured = os.environ.get("PIP_INDEX_URL") or run(
        [sys.executable, "-m", "pip", "config", "get", "global.index-url"], timeout=60).stdout.strip()
    for index in (configured, "https://pypi.org/simple"):
        if index.startswith("http") and _index_answers(index):
            return index
    raise Unavailable("neither PyTorch's CPU index nor a package index with the pinned torch answers")


def build_command(engine: Engine, tag: str, stand_in: bool, index: str | None) -> list[str]:
    cmd = ["build", "-t", tag]
    if index:
        cmd += ["--build-arg", f"TORCH_INDEX={index}"]
    if engine.is_podman:
        cmd += ["--format", "docker"]          # keeps HEALTHCHECK (the OCI format drops it)
        if stand_in:
            cmd += ["--pull=never"]
        if CA_BUNDLE.is_file():
            cmd += ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"]
    return [*cmd, str(PROJECT_ROOT)]


def scratch_dir() -> Path:
    """A folder for the engine's config and the stand-in's tarball (tests' tmp_path is per test)."""
    return Path(tempfile.mkdtemp(prefix="attnviz-docker-"))
