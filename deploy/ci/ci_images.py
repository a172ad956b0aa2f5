"""The images `make deploy-check` runs, built on this machine without any image registry.

- ``localhost/newsletter-ci/debian:bookworm``: ``debootstrap --variant=minbase`` from the Debian
  mirror this machine's apt uses, then ``podman import`` (built once, kept while it exists);
- ``localhost/newsletter-ci/python:3.11``, ``.../rabbitmq:3.10``, ``.../postgres:15`` and
  ``.../nginx:1.22``: from ``deploy/ci/images/*.Containerfile`` on that base (podman's layer
  cache makes a rebuild cheap);
- the project image from ``deploy/Dockerfile`` unchanged, with ``PYTHON_IMAGE`` pointing at the
  Python image and the host-built wheelhouse mounted at ``/wheels`` for pip.

Images live in podman's store and the wheelhouse in a machine-wide cache folder
(``DEPLOY_CHECK_CACHE``, default ``/var/cache/newsletter-deploy-check``, one folder per
pyproject.toml), so a fresh clone of the repository reuses both.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CI_DIR = REPO_ROOT / "deploy" / "ci"
IMAGES_DIR = CI_DIR / "images"
BASE_IMAGE = "localhost/newsletter-ci/debian:bookworm"
PYTHON_IMAGE = "localhost/newsletter-ci/python:3.11"
RABBITMQ_IMAGE = "localhost/newsletter-ci/rabbitmq:3.10"
POSTGRES_IMAGE = "localhost/newsletter-ci/postgres:15"
NGINX_IMAGE = "localhost/newsletter-ci/nginx:1.22"
PROJECT_IMAGE = "localhost/newsletter-suite:ci"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Build steps (apt) use the host's network: DNS through the bridge network's NAT failed here
# ("Temporary failure resolving") while the host resolved at once. The stack itself runs on its
# own bridge network.
BUILD_NETWORK = ("--network", "host")
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))

Say = Callable[[str], None]


class BuildFailed(RuntimeError):
    """A command that builds an image failed; the message holds the end of its output."""


def podman_env() -> dict[str, str]:
    """The environment for every podman call: the project's containers.conf, not /etc's."""
    return {**os.environ, "CONTAINERS_CONF": str(CI_DIR / "containers.conf")}


def run(command: Sequence[str], *, what: str, stdin: int | None = None) -> str:
    done = subprocess.run(  # noqa: S603 - fixed commands with our own arguments
        list(command),
        env=podman_env(),
        stdin=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        raise BuildFailed(f"{what} failed (exit {done.returncode}):\n{tail}")
    return done.stdout


def image_exists(name: str) -> bool:
    command = ["podman", "image", "exists", name]
    done = subprocess.run(command, env=podman_env(), check=False)  # noqa: S603
    return done.returncode == 0


def debian_mirror(sources: Sequence[Path] = APT_SOURCES) -> str:
    """The Debian mirror apt uses here (``DEBIAN_MIRROR`` wins), for debootstrap."""
    if os.environ.get("DEBIAN_MIRROR"):
        return os.environ["DEBIAN_MIRROR"]
    files: list[Path] = []
    for source in sources:
        if source.is_dir():
            files += sorted(p for p in source.iterdir() if p.suffix in {".list", ".sources"})
        elif source.is_file():
            files.append(source)
    for path in files:
        for uri in _bookworm_uris(path.read_text(encoding="utf-8", errors="replace")):
            if uri.rstrip("/").endswith("/debian"):
                return uri.rstrip("/")
    return DEFAULT_MIRROR


def _bookworm_uris(text: str) -> list[str]:
    uris: list[str] = []
    for line in text.splitlines():  # one-line format: deb [opts] URI suite components
        match = re.match(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+bookworm\s", line)
        if match:
            uris.append(match.group(1))
    for stanza in re.split(r"\n\s*\n", text):  # deb822 format
        fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, flags=re.MULTILINE))
        if (
            "deb" in fields.get("Types", "").split()
            and "bookworm" in fields.get("Suites", "").split()
        ):
            uris += fields.get("URIs", "").split()
    return uris


def ensure_base_image(*, work: Path, say: Say) -> None:
    if image_exists(BASE_IMAGE):
        say(f"   {BASE_IMAGE} exists: kept")
        return
    mirror = debian_mirror()
    rootfs = work / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    say(f"   debootstrap --variant=minbase bookworm from {mirror}")
    try:
        run(
            ["debootstrap", "--variant=minbase", "bookworm", str(rootfs), mirror],
            what="debootstrap",
        )
        tar = subprocess.Popen(  # noqa: S603
            ["tar", "-C", str(rootfs), "-c", "."],  # noqa: S607
            stdout=subprocess.PIPE,
        )
        assert tar.stdout is not None
        run(["podman", "import", "-", BASE_IMAGE], what="podman import", stdin=tar.stdout.fileno())
        tar.stdout.close()
        if tar.wait() != 0:
            raise BuildFailed("tar of the debootstrapped tree failed")
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


def cache_dir() -> Path:
    return Path(os.environ.get("DEPLOY_CHECK_CACHE") or "/var/cache/newsletter-deploy-check")


def ensure_wheelhouse(*, say: Say) -> Path:
    """Wheels of every dependency, built on the host (pip in a container may not reach PyPI)."""
    pyproject = REPO_ROOT / "pyproject.toml"
    digest = hashlib.sha256(pyproject.read_bytes()).hexdigest()
    wheelhouse = cache_dir() / f"wheelhouse-{digest[:16]}"
    stamp = wheelhouse / ".pyproject-sha256"
    if stamp.exists() and stamp.read_text(encoding="ascii").strip() == digest:
        say(f"   wheelhouse for this pyproject.toml exists: kept ({wheelhouse})")
        return wheelhouse
    shutil.rmtree(wheelhouse, ignore_errors=True)
    wheelhouse.mkdir(parents=True)
    build_requires = ["setuptools>=69", "wheel"]  # pip builds the project from source inside
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(wheelhouse)]
    run([*pip, str(REPO_ROOT), *build_requires], what="pip wheel")
    for own in wheelhouse.glob("newsletter_suite-*.whl"):
        own.unlink()  # the Dockerfile builds the project from the copied sources
    stamp.write_text(digest + "\n", encoding="ascii")
    say(f"   built {len(list(wheelhouse.glob('*.whl')))} wheels into {wheelhouse}")
    return wheelhouse


def build_support_images(*, say: Say) -> None:
    for name, containerfile in (
        (PYTHON_IMAGE, "python.Containerfile"),
        (RABBITMQ_IMAGE, "rabbitmq.Containerfile"),
        (POSTGRES_IMAGE, "postgres.Containerfile"),
        (NGINX_IMAGE, "nginx.Containerfile"),
    ):
        build = ["podman", "build", "-q", *BUILD_NETWORK, "--build-arg", f"BASE_IMAGE={BASE_IMAGE}"]
        build += ["-t", name]
        run([*build, "-f", str(IMAGES_DIR / containerfile), str(IMAGES_DIR)], what=f"build {name}")
        say(f"   {name}")


def build_project_image(*, wheelhouse: Path, say: Say) -> None:
    """``deploy/Dockerfile`` as it is: only build arguments and a build-time volume differ."""
    deploy = REPO_ROOT / "deploy"
    command = [
        *("podman", "build", "-q", *BUILD_NETWORK, "-f", str(deploy / "Dockerfile")),
        *("--ignorefile", str(deploy / "Dockerfile.dockerignore")),
        *("--build-arg", f"PYTHON_IMAGE={PYTHON_IMAGE}"),
        *("--volume", f"{wheelhouse}:/wheels:ro"),
        *("-t", PROJECT_IMAGE, str(REPO_ROOT)),
    ]
    run(command, what="podman build deploy/Dockerfile")
    say(f"   {PROJECT_IMAGE} from deploy/Dockerfile (PYTHON_IMAGE={PYTHON_IMAGE})")
