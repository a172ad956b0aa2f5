"""Isolated resources on the real local servers, so test runs never see each other's data.

Each test session gets its own RabbitMQ virtual host and its own PostgreSQL database, both
removed at the end. Tests never use the default vhost or the ``test`` database directly. The
making and removing is :mod:`benchmarks.scratch` (the benchmarks' helper too); this module binds
it to the tests' servers (``NEWSLETTER_TEST_AMQP_URL``, ``NEWSLETTER_TEST_POSTGRES_URL``).
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

from benchmarks import scratch
from benchmarks.scratch import delete_vhost, rabbitmqctl, unique_name

RABBIT_BASE_URL = os.environ.get("NEWSLETTER_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
POSTGRES_ADMIN_URL = os.environ.get(
    "NEWSLETTER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
PREFIX = "nltest"

__all__ = [
    "POSTGRES_ADMIN_URL",
    "RABBIT_BASE_URL",
    "create_database",
    "create_vhost",
    "delete_vhost",
    "drop_database",
    "rabbitmqctl",
    "unique_name",
    "urlsplit",
    "urlunsplit",
]


def create_vhost() -> tuple[str, str]:
    """Create a fresh vhost with full permissions for the test user; returns (name, url)."""
    return scratch.create_vhost(RABBIT_BASE_URL, prefix=PREFIX)


async def create_database() -> tuple[str, str]:
    """Create a fresh, empty PostgreSQL database; returns (name, url)."""
    return await scratch.create_database(POSTGRES_ADMIN_URL, prefix=PREFIX)


async def drop_database(name: str) -> None:
    await scratch.drop_database(name, POSTGRES_ADMIN_URL)
