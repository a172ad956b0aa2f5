"""Where the CPU of a signup goes: py-spy samples of the service during the load, by area.

py-spy attaches to the service with ptrace: that needs root, or ``kernel.yama.ptrace_scope``
0 (py-spy is the bench's child, the service its sibling); otherwise the report says why there
are no samples and ``--profiler cprofile`` still works.

``bench signups --profile PATH`` attaches py-spy (a sampling profiler from PyPI, a dev
dependency) to the running service and its workers for the length of the load, with
``--nonblocking`` (the process is never paused) and without ``--idle`` (a thread waiting in
``epoll`` or a socket is not sampled), so the samples are CPU time, not wall time. It costs the
service next to nothing, unlike cProfile, which doubled a signup's CPU and counted every
coroutine resumption as a call; ``--profiler cprofile`` still runs that one.

Each sample goes to one area (page rendering, form parsing, CSRF and token signing, SQL, the
confirmation publish, logging, ...): the innermost frame that belongs to a *specific* area
wins (json encoding under logging is logging), else the innermost frame of a *general* one
(the web framework, the HTTP server, the event loop). The areas' shares times the service CPU
per signup (from ``psutil``) are the milliseconds per signup of each.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# (area, what a frame's file path contains), most specific first.
SPECIFIC_AREAS: list[tuple[str, tuple[str, ...]]] = [
    (
        "logging (structlog, redaction, stdlib logging)",
        ("structlog/", "shared/logging.py", "/logging/"),
    ),
    (
        "page rendering (Jinja2, pages.py)",
        ("jinja2/", "markupsafe/", "subscription/pages.py", "subscription/i18n.py", "babel/"),
    ),
    (
        "form parsing (multipart, urlencoded)",
        ("python_multipart/", "starlette/formparsers.py", "urllib/parse.py"),
    ),
    (
        "CSRF and token signing (hmac, itsdangerous)",
        ("itsdangerous/", "form_guard.py", "/hmac.py", "shared/tokens.py", "link_tokens.py"),
    ),
    (
        "address validation (email-validator, idna)",
        ("email_validator/", "idna/", "address_rules.py"),
    ),
    ("SQL (SQLAlchemy, asyncpg)", ("sqlalchemy/", "asyncpg/", "sqlmodel/")),
    (
        "confirmation publish (aio-pika, aiormq, pamqp)",
        ("aio_pika/", "aiormq/", "pamqp/", "shared/messaging/", "mail_commands.py"),
    ),
    ("/healthz thread of the health port (liveness.py)", ("subscription/liveness.py",)),
    ("metrics (prometheus_client)", ("prometheus_client/", "subscription/metrics.py")),
]
GENERAL_AREAS: list[tuple[str, tuple[str, ...]]] = [
    ("signup logic (signup.py, group_commit.py, routes)", ("services/subscription/",)),
    (
        "web framework (FastAPI, Starlette, pydantic)",
        ("fastapi/", "starlette/", "pydantic/", "pydantic_core/", "anyio/"),
    ),
    ("HTTP server (uvicorn, httptools)", ("uvicorn/", "httptools/", "h11/")),
    ("event loop (asyncio, uvloop)", ("asyncio/", "uvloop/")),
]
OTHER = "other"
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


class ProfilerMissing(RuntimeError):
    """py-spy is not installed (``pip install py-spy``; it is in the dev extras)."""


def py_spy() -> str:
    """The py-spy executable beside this interpreter, else on the PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise ProfilerMissing("py-spy is not installed: pip install py-spy (a dev extra)")
    return found


class Sampler:
    """py-spy recording the service (and its worker processes) until :meth:`stop`."""

    def __init__(self, pid: int, output: Path, *, rate: int = 250) -> None:
        self.output = output
        output.parent.mkdir(parents=True, exist_ok=True)
        output.unlink(missing_ok=True)  # never read an earlier run's samples as this one's
        command = [
            py_spy(), "record", "--pid", str(pid), "--subprocesses", "--nonblocking",
            "--full-filenames", "--rate", str(rate), "--format", "raw",
            "--output", str(output),
        ]  # fmt: skip
        self._log = output.with_suffix(".py-spy.log").open("wb")
        self._process = subprocess.Popen(command, stdout=self._log, stderr=self._log)  # noqa: S603

    def stop(self) -> None:
        """Stop sampling; py-spy writes its file on SIGINT."""
        self._process.send_signal(signal.SIGINT)
        try:
            self._process.wait(30)
        except subprocess.TimeoutExpired:
            self._process.kill()
        self._log.close()

    def failure(self) -> str:
        """Why there are no samples (py-spy's last words), or "" if there are."""
        if self.output.exists():
            return ""
        said = self.output.with_suffix(".py-spy.log").read_text(errors="replace").strip()
        # Attaching needs ptrace rights over the service: root, or kernel.yama.ptrace_scope 0.
        return "py-spy wrote no samples: " + (said.splitlines()[-1] if said else "(no output)")


def _file_of(frame: str) -> str:
    matched = _FRAME.match(frame)
    return matched.group("file") if matched else frame


# Outer frames of every request: they count only as the innermost frame outside the stdlib.
LEAF_AREAS: list[tuple[str, tuple[str, ...]]] = [
    ("request id and log line (request_log.py)", ("subscription/request_log.py",)),
]


def _area_of(frames: list[str]) -> str:
    files = [_file_of(frame) for frame in reversed(frames)]  # innermost first
    ours = next((path for path in files if "/site-packages/" in path or "/services/" in path), "")
    for area, needles in LEAF_AREAS:
        if any(needle in ours for needle in needles):
            return area
    for table in (SPECIFIC_AREAS, GENERAL_AREAS):
        for path in files:
            for area, needles in table:
                if any(needle in path for needle in needles):
                    return area
    return OTHER


def _package_of(path: str) -> str:
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0]
    for ours in ("services/", "shared/", "benchmarks/"):
        if f"/{ours}" in path or path.startswith(ours):
            return ours + path.split(ours, 1)[1].split("/", 1)[0]
    return "stdlib" if path.endswith(".py") else path


@dataclass
class Profile:
    """Samples by area, by package of the innermost frame, and by innermost function."""

    samples: int
    areas: Counter[str]
    packages: Counter[str]
    functions: Counter[str]

    @classmethod
    def read(cls, path: Path) -> Profile | None:
        """The samples py-spy wrote to ``path``; None if it wrote nothing."""
        if not path.exists():
            return None
        areas: Counter[str] = Counter()
        packages: Counter[str] = Counter()
        functions: Counter[str] = Counter()
        total = 0
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
            if not frames:
                continue
            total += count
            areas[_area_of(frames)] += count
            leaf = frames[-1]
            packages[_package_of(_file_of(leaf))] += count
            functions[leaf.replace(str(Path.cwd()) + "/", "")] += count
        return cls(samples=total, areas=areas, packages=packages, functions=functions)

    def report(self, *, cpu_ms_per_signup: float, top: int = 15) -> str:
        """The areas in ms per signup, then packages and functions by own samples."""
        total = self.samples or 1
        lines = [
            f"where a signup's {cpu_ms_per_signup:.2f} ms of service CPU goes "
            f"(py-spy, {self.samples} samples of CPU, innermost area of each):"
        ]
        lines += [
            f"  {count / total * cpu_ms_per_signup:6.3f} ms {count / total:6.1%}  {area}"
            for area, count in self.areas.most_common()
        ]
        lines.append("own samples per package (innermost frame):")
        lines += [
            f"  {count / total:6.1%}  {package}" for package, count in self.packages.most_common(12)
        ]
        lines.append(f"top {top} functions (own samples):")
        lines += [
            f"  {count / total:6.1%}  {function}"
            for function, count in self.functions.most_common(top)
        ]
        return "\n".join(lines)
