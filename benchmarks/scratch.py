"""Scratch RabbitMQ vhosts and PostgreSQL databases on the machine's servers: the one helper
that benchmarks, fault drills and the tests' fixtures (``tests/support/infra.py``) use to get
resources of their own, so that runs never see each other's messages or rows.

A vhost is made with ``rabbitmqctl`` (the broker is local) with full permissions for the URL's
user; a database with ``CREATE DATABASE`` over an admin connection, dropped ``WITH (FORCE)``.
The context managers :func:`vhost` and :func:`database` remove what they made; the functions
beneath them are for fixtures that need the name.

``NEWSLETTER_BENCH_AMQP_URL`` and ``NEWSLETTER_BENCH_POSTGRES_URL`` name the servers of the
benchmarks (the local defaults otherwise); the tests pass their own.
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
APPLICATION_NAME = "nl-scratch"


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def rabbitmqctl(*args: str) -> None:
    """Run ``rabbitmqctl -q ARGS``; raises ``CalledProcessError``/``OSError`` if it fails."""
    binary = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    subprocess.run([binary, "-q", *args], check=True, capture_output=True, timeout=60)  # noqa: S603


def create_vhost(base_url: str = AMQP_BASE, *, prefix: str = "nlbench") -> tuple[str, str]:
    """A fresh vhost with full permissions for ``base_url``'s user: ``(name, amqp url)``."""
    parts = urlsplit(base_url)
    name = unique_name(prefix)
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, parts.username or "guest", ".*", ".*", ".*")
    except BaseException:
        delete_vhost(name)
        raise
    return name, urlunsplit((parts.scheme, parts.netloc, "/" + quote(name, safe=""), "", ""))


def delete_vhost(name: str) -> None:
    rabbitmqctl("delete_vhost", name)


@contextlib.contextmanager
def vhost(base_url: str = AMQP_BASE, *, prefix: str = "nlbench") -> Iterator[str]:
    """The AMQP URL of a fresh vhost, deleted at the end."""
    name, url = create_vhost(base_url, prefix=prefix)
    try:
        yield url
    finally:
        delete_vhost(name)


async def _admin(admin_url: str, statement: str, application_name: str) -> None:
    admin = await asyncpg.connect(admin_url, server_settings={"application_name": application_name})
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


async def create_database(
    admin_url: str = ADMIN_URL,
    *,
    prefix: str = "nlbench",
    application_name: str = APPLICATION_NAME,
) -> tuple[str, str]:
    """A fresh, empty PostgreSQL database on ``admin_url``'s server: ``(name, url)``."""
    name = unique_name(prefix)
    await _admin(admin_url, f'CREATE DATABASE "{name}"', application_name)
    parts = urlsplit(admin_url)
    return name, urlunsplit((parts.scheme, parts.netloc, "/" + name, "", ""))


async def drop_database(
    name: str, admin_url: str = ADMIN_URL, *, application_name: str = APPLICATION_NAME
) -> None:
    await _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', application_name)


@contextlib.asynccontextmanager
async def database(admin_url: str = ADMIN_URL, *, prefix: str = "nlbench") -> AsyncIterator[str]:
    """The URL of a fresh database migrated to the newest schema, dropped at the end."""
    async with named_database(admin_url, prefix=prefix) as (_, url):
        yield url


@contextlib.asynccontextmanager
async def named_database(
    admin_url: str = ADMIN_URL,
    *,
    prefix: str = "nlbench",
    application_name: str = APPLICATION_NAME,
) -> AsyncIterator[tuple[str, str]]:
    """``(name, url)`` of a fresh migrated database, dropped at the end; the admin connections
    carry ``application_name`` (a fault drill spares its own connections by it)."""
    name, url = await create_database(admin_url, prefix=prefix, application_name=application_name)
    try:
        await upgrade_async(url)
        yield name, url
    finally:
        await drop_database(name, admin_url, application_name=application_name)
