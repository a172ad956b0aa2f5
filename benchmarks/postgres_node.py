"""A PostgreSQL server of one's own, for measurements that the machine's shared server would blur.

The shared server (127.0.0.1:5432) serves every helper on the machine: its WAL position, its
background writers and its checkpoints count everyone's work. :func:`own_cluster` runs
``initdb`` into a temporary folder and starts a server on a loopback port of its own (same
binaries, Debian's defaults, ``fsync`` on), so the write-ahead log it writes and the CPU of all
its processes belong to one benchmark. As root, ``initdb`` and ``pg_ctl`` run as ``postgres``
(PostgreSQL refuses to run as root). The server is stopped and its folder removed at the end.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


class PostgresNodeError(RuntimeError):
    """initdb or the server did not start."""


@dataclass(frozen=True)
class PostgresNode:
    data: Path
    port: int

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise PostgresNodeError(f"{name} not found: install Debian's postgresql")
    return path


def _as_postgres(*command: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(command: list[str], *, timeout: float) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)  # noqa: S603
    if result.returncode != 0:
        raise PostgresNodeError(f"{command[0]} failed: {result.stderr.strip()[-400:]}")


@contextlib.contextmanager
def own_cluster(*, timeout: float = 120.0) -> Iterator[PostgresNode]:
    """A fresh server (``trust`` on loopback) on a port of its own; stopped and removed after."""
    with tempfile.TemporaryDirectory(prefix="nl-pg-") as folder:
        data = Path(folder) / "data"
        data.mkdir()
        if os.geteuid() == 0:
            shutil.chown(folder, "postgres")
            shutil.chown(data, "postgres")
        _run(
            _as_postgres(
                _bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"
            ),
            timeout=timeout,
        )
        node = PostgresNode(data=data, port=_free_port())
        options = f"-p {node.port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=200"
        _run(
            _as_postgres(
                _bin("pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(Path(folder) / "log"),
                "-w",
                "-t",
                str(int(timeout)),
                "start",
            ),
            timeout=timeout + 10,
        )
        try:
            yield node
        finally:
            _run(
                _as_postgres(_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"),
                timeout=60,
            )
