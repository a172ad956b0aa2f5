"""The compose stack of `make deploy-check`, driven through podman-compose.

podman-compose runs no health-check timers without systemd and ignores
``depends_on: condition: service_healthy``, so the stack starts in stages (``up --no-deps``) and
this module asks for health itself: ``podman healthcheck run`` runs the compose file's own
health test on demand, ``podman wait`` waits for the one-shot steps, and the services' probes
are asked from inside their containers.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from ci_images import (
    NGINX_IMAGE,
    POSTGRES_IMAGE,
    PROJECT_IMAGE,
    RABBITMQ_IMAGE,
    REPO_ROOT,
    podman_env,
)

PROJECT = "newsletter-ci"
COMPOSE_FILES = (
    REPO_ROOT / "deploy" / "compose.yaml",
    REPO_ROOT / "deploy" / "ci" / "compose.ci.yaml",
)
HOST_PORTS = (
    "RABBITMQ_PORT",
    "RABBITMQ_MANAGEMENT_PORT",
    "POSTGRES_PORT",
    "MAILPIT_WEB_PORT",
    "MAILPIT_SMTP_PORT",
    "PUBLIC_PORT",
    "BOUNCES_SMTP_PORT",
    "BOUNCES_HTTP_PORT",
    "PROMETHEUS_PORT",
    "GRAFANA_PORT",
)
# Host ports of the stack: a block of their own, clear of the test servers (tests/support/ports.py:
# 20000-24499), the machine's RabbitMQ distribution port (25672), the kernel's ephemeral range
# (32768-60999, where outgoing connections and bind(0) draw from) and 5672/5432.
PORT_RANGE = range(26000, 27000)
# Probe port of each suite service inside its container (deploy/compose.yaml).
PROBE_PORTS = {"subscription": 8000, "renderer": 9101, "dispatcher": 9102, "bounces": 9103}


class StackFailed(RuntimeError):
    """The stack did not come up or answer as it should; the message says where."""


@dataclass
class Stack:
    work: Path
    maildir: Path
    issue: Path
    ports: dict[str, int] = field(default_factory=dict)

    def write_env_file(self) -> Path:
        """Fresh secrets and free host ports for this run (never the machine's 5672/5432)."""
        self.ports = dict(zip(HOST_PORTS, free_ports(len(HOST_PORTS)), strict=True))
        values = {
            "NEWSLETTER_IMAGE": PROJECT_IMAGE,
            "CI_RABBITMQ_IMAGE": RABBITMQ_IMAGE,
            "CI_POSTGRES_IMAGE": POSTGRES_IMAGE,
            "CI_NGINX_IMAGE": NGINX_IMAGE,
            "NEWSLETTER_SECRET_KEY": secrets.token_urlsafe(48),
            "NEWSLETTER_ADMIN_TOKEN": secrets.token_urlsafe(32),
            "POSTGRES_PASSWORD": secrets.token_urlsafe(24),
            "RABBITMQ_PASSWORD": secrets.token_urlsafe(24),
            "GRAFANA_ADMIN_PASSWORD": secrets.token_urlsafe(24),
            "NEWSLETTER_PUBLIC_URL": self.public_url,
            "NEWSLETTER_ALLOW_HTTP": "true",
            "NEWSLETTER_FROM": "Weekly Digest <digest@newsletter.test>",
            "DISPATCHER_REPLICAS": "1",
            "DEPLOY_CHECK_MAILDIR": str(self.maildir),
            "DEPLOY_CHECK_ISSUE": str(self.issue),
            **{name: str(port) for name, port in self.ports.items()},
        }
        path = self.work / "compose.env"
        path.write_text("".join(f"{k}={v}\n" for k, v in values.items()), encoding="utf-8")
        path.chmod(0o600)
        return path

    @property
    def public_url(self) -> str:
        """The proxy's host port: the one origin readers see (NEWSLETTER_PUBLIC_URL)."""
        return f"http://127.0.0.1:{self.ports['PUBLIC_PORT']}"

    def compose(self, *args: str, check: bool = True) -> str:
        command = [str(Path(sys.executable).parent / "podman-compose"), "-p", PROJECT]
        command += ["--env-file", str(self.work / "compose.env")]
        for path in COMPOSE_FILES:
            command += ["-f", str(path)]
        done = subprocess.run(  # noqa: S603 - our own fixed command
            [*command, *args], env=podman_env(), capture_output=True, text=True, check=False
        )
        if check and done.returncode != 0:
            tail = (done.stdout + done.stderr)[-3000:]
            raise StackFailed(f"podman-compose {' '.join(args)} exited {done.returncode}:\n{tail}")
        return done.stdout + done.stderr

    def up(self, *services: str) -> None:
        self.compose("up", "-d", "--no-deps", "--no-build", *services)

    def down(self) -> None:
        self.compose("down", "-v", "-t", "20", check=False)
        leftovers = self.containers()
        if leftovers:
            podman("rm", "-f", *leftovers.values(), check=False)

    def containers(self) -> dict[str, str]:
        """Service name -> container name, for this project's containers."""
        out = podman(
            "ps",
            "-a",
            "--filter",
            f"label=com.docker.compose.project={PROJECT}",
            "--format",
            '{{.Names}} {{index .Labels "com.docker.compose.service"}}',
        )
        found: dict[str, str] = {}
        for line in out.splitlines():
            name, _, service = line.partition(" ")
            if service:
                found.setdefault(service, name)
        return found

    def container(self, service: str) -> str:
        try:
            return self.containers()[service]
        except KeyError as err:
            raise StackFailed(f"no container for service {service!r}") from err

    def wait_healthy(self, service: str, *, timeout: float) -> float:
        """Run the compose file's health test until it passes; returns the seconds waited."""
        started = time.monotonic()
        name = self.container(service)
        last = ""
        while time.monotonic() - started < timeout:
            done = subprocess.run(  # noqa: S603
                ["podman", "healthcheck", "run", name],  # noqa: S607
                env=podman_env(),
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode == 0:
                return time.monotonic() - started
            last = (done.stdout + done.stderr).strip()
            self._fail_if_exited(service)
            time.sleep(1.0)
        raise StackFailed(f"{service} not healthy after {timeout:.0f}s: {last[-500:]}")

    def wait_exit_zero(self, service: str, *, timeout: float) -> None:
        """A one-shot step (migrations, definitions import) must finish with exit code 0."""
        name = self.container(service)
        done = subprocess.run(  # noqa: S603
            ["podman", "wait", name],  # noqa: S607
            env=podman_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        code = done.stdout.strip()
        if code != "0":
            raise StackFailed(
                f"{service} exited {code or done.stderr.strip()}:\n{self.logs(service)}"
            )

    def probe(self, service: str, path: str = "/readyz") -> tuple[int, str]:
        """GET a service's probe from inside its container: (HTTP status, start of the body)."""
        url = f"http://127.0.0.1:{PROBE_PORTS[service]}{path}"
        script = (
            "import sys, urllib.error, urllib.request\n"
            "try:\n"
            "    r = urllib.request.urlopen(sys.argv[1], timeout=5)\n"
            "except urllib.error.HTTPError as e:\n"
            "    r = e\n"
            "print(r.status, r.read(300).decode('utf-8', 'replace').replace('\\n', ' '))\n"
        )
        out = podman("exec", self.container(service), "python", "-c", script, url, check=False)
        status, _, body = out.strip().partition(" ")
        return (int(status) if status.isdigit() else 0), (body or out.strip())

    def wait_ready(self, service: str, *, timeout: float) -> float:
        started = time.monotonic()
        status, body = 0, ""
        while time.monotonic() - started < timeout:
            status, body = self.probe(service)
            if status == 200:
                return time.monotonic() - started
            self._fail_if_exited(service)
            time.sleep(0.5)
        raise StackFailed(f"{service} /readyz answered {status} after {timeout:.0f}s: {body}")

    def wait_public_page(self, path: str, *, timeout: float) -> float:
        """Until ``path`` answers 200 on the public origin (the proxy's host port)."""
        started = time.monotonic()
        last = "no answer"
        while time.monotonic() - started < timeout:
            try:
                answer = httpx.get(self.public_url + path, timeout=5)
            except httpx.TransportError as err:
                last = repr(err)
            else:
                if answer.status_code == 200:
                    return time.monotonic() - started
                last = f"HTTP {answer.status_code}: {answer.text[:200]}"
            self._fail_if_exited("proxy")
            time.sleep(0.5)
        raise StackFailed(f"{self.public_url}{path} not 200 after {timeout:.0f}s: {last}")

    def exec(self, service: str, *command: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603
            ["podman", "exec", self.container(service), *command],  # noqa: S607
            env=podman_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def logs(self, service: str, lines: int = 40) -> str:
        name = self.containers().get(service)
        if name is None:
            return f"(no container for {service})"
        return podman("logs", "--tail", str(lines), name, check=False)

    def _fail_if_exited(self, service: str) -> None:
        name = self.container(service)
        state = podman("inspect", "--format", "{{.State.Status}}", name, check=False).strip()
        if state in {"exited", "stopped", "dead"}:
            raise StackFailed(f"{service} stopped ({state}):\n{self.logs(service)}")


def podman(*args: str, check: bool = True) -> str:
    done = subprocess.run(  # noqa: S603
        ["podman", *args],  # noqa: S607
        env=podman_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if check and done.returncode != 0:
        raise StackFailed(f"podman {' '.join(args[:3])} exited {done.returncode}: {done.stderr}")
    return done.stdout + (done.stderr if not check else "")


def free_ports(count: int, *, candidates: range = PORT_RANGE) -> list[int]:
    """``count`` ports of ``candidates`` that bind on 127.0.0.1 now, from a random start.

    Two checks at once never share ports: deploy_check.py holds a machine-wide lock for the
    whole run. The random start keeps a port a just-ended run left in TIME_WAIT out of the way.
    """
    start = secrets.randbelow(len(candidates))
    found: list[int] = []
    for offset in range(len(candidates)):
        port = candidates[(start + offset) % len(candidates)]
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    first, last = candidates[0], candidates[-1]
    raise StackFailed(f"only {len(found)} of {count} host ports free in {first}-{last}")


def wait_smtp_banner(port: int, *, timeout: float) -> float:
    """Until something on 127.0.0.1:port greets with 220 (the sink in its container)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
                sock.settimeout(3)
                if sock.recv(64).startswith(b"220"):
                    return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.3)
    raise StackFailed(f"no SMTP greeting on 127.0.0.1:{port} after {timeout:.0f}s")
