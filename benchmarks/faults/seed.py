"""A drill's own PostgreSQL database: created in the machine's server, seeded, dropped after.

The audience and editions are the send benchmarks' own (:mod:`benchmarks.audience`), seeded
through a connection the faults never terminate.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import asyncpg

from benchmarks import audience, scratch

ADMIN_URL = os.environ.get(
    "NEWSLETTER_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
# The drill's own connections carry this name, so that a fault never terminates them.
APPLICATION_NAME = "nl-bench-faults"


async def admin_connection(url: str = ADMIN_URL) -> asyncpg.Connection:
    return await asyncpg.connect(url, server_settings={"application_name": APPLICATION_NAME})


@contextlib.asynccontextmanager
async def own_database() -> AsyncIterator[tuple[str, str]]:
    """A fresh migrated database; yields (name, url) and drops it at the end."""
    async with scratch.named_database(
        ADMIN_URL, prefix="nlfaults", application_name=APPLICATION_NAME
    ) as (name, url):
        yield name, url


async def seed(url: str, *, recipients: int, send_id: str) -> set[str]:
    """Seed the audience and the editions (:mod:`benchmarks.audience`); the audience's
    addresses."""
    return await audience.seed(
        url,
        recipients=recipients,
        send_id=send_id,
        issue_key="faults",
        application_name=APPLICATION_NAME,
    )
