"""Isolated resources on the real local servers, so test runs never see each other's data.

Each test session gets its own RabbitMQ virtual host and its own PostgreSQL database, both
removed at the end. Tests never use the default vhost or the ``test`` database directly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

RABBIT_BASE_URL = os.environ.get("NEWSLETTER_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
POSTGRES_ADMIN_URL = os.environ.get(
    "NEWSLETTER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def rabbitmqctl(*args: str) -> None:
    binary = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    subprocess.run([binary, "-q", *args], check=True, capture_output=True, timeout=60)


def create_vhost() -> tuple[str, str]:
    """Create a fresh vhost with full permissions for the test user; returns (name, url)."""
    name = unique_name("nltest")
    user = urlsplit(RABBIT_BASE_URL).username or "guest"
    rabbitmqctl("add_vhost", name)
    rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
    parts = urlsplit(RABBIT_BASE_URL)
    return name, urlunsplit((parts.scheme, parts.netloc, "/" + quote(name, safe=""), "", ""))


def delete_vhost(name: str) -> None:
    rabbitmqctl("delete_vhost", name)


async def create_database() -> tuple[str, str]:
    """Create a fresh PostgreSQL database; returns (name, url)."""
    name = unique_name("nltest")
    conn = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    parts = urlsplit(POSTGRES_ADMIN_URL)
    return name, urlunsplit((parts.scheme, parts.netloc, "/" + name, "", ""))


async def drop_database(name: str) -> None:
    conn = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
