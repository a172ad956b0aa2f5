"""A RabbitMQ vhost and a migrated PostgreSQL database of a benchmark's own, removed after.

``NEWSLETTER_BENCH_AMQP_URL`` and ``NEWSLETTER_BENCH_POSTGRES_URL`` name the servers (the local
defaults otherwise). The vhost is made with ``rabbitmqctl``, as the tests' fixtures make theirs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from shared.db.migrate import upgrade_async

ADMIN_URL = os.environ.get(
    "NEWSLETTER_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
AMQP_BASE = os.environ.get("NEWSLETTER_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def _name() -> str:
    return f"nlbench_{uuid.uuid4().hex[:10]}"


def _rabbitmqctl(*args: str) -> None:
    binary = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    subprocess.run([binary, "-q", *args], check=True, capture_output=True, timeout=60)  # noqa: S603


@contextlib.contextmanager
def vhost() -> Iterator[str]:
    """The AMQP URL of a fresh vhost with full permissions for the configured user."""
    name = _name()
    parts = urlsplit(AMQP_BASE)
    _rabbitmqctl("add_vhost", name)
    try:
        _rabbitmqctl("set_permissions", "-p", name, parts.username or "guest", ".*", ".*", ".*")
        yield urlunsplit((parts.scheme, parts.netloc, "/" + quote(name, safe=""), "", ""))
    finally:
        _rabbitmqctl("delete_vhost", name)


async def _admin(statement: str) -> None:
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def database() -> AsyncIterator[str]:
    """The URL of a fresh PostgreSQL database, migrated to the newest schema."""
    name = _name()
    await _admin(f'CREATE DATABASE "{name}"')
    parts = urlsplit(ADMIN_URL)
    try:
        url = urlunsplit((parts.scheme, parts.netloc, "/" + name, "", ""))
        await upgrade_async(url)
        yield url
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
