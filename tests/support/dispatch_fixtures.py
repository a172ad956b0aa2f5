"""Fixtures of the dispatcher's fault tests: databases and RabbitMQ nodes of the test's own.

A test module loads them as a plugin (``pytest_plugins = ("tests.support.dispatch_fixtures",)``)
and never imports this module itself (pytest must import it first to rewrite its asserts);
the types live in :mod:`tests.support.own_database`. The nodes are started once per module (a
boot costs seconds) and never address the machine's broker; each database is created for one
test and dropped after.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from shared.db.engine import async_url, session_factory
from tests.support import dispatch_seed, infra
from tests.support.own_database import OBSERVER, OwnDatabase
from tests.support.rabbit_nodes import RabbitNodes, own_nodes


@pytest.fixture
async def own_database() -> AsyncIterator[OwnDatabase]:
    """A fresh migrated PostgreSQL database of this test's own, dropped at the end."""
    name, url = await dispatch_seed.fresh_postgres()
    engine = create_async_engine(
        async_url(url),
        pool_pre_ping=True,
        connect_args={"server_settings": {"application_name": OBSERVER}},
    )
    try:
        yield OwnDatabase(name, url, session_factory(engine))
    finally:
        await engine.dispose()
        await infra.drop_database(name)


@pytest.fixture(params=["sqlite", "postgres"])
async def own_database_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """SQLite, or a PostgreSQL database of this test's own (its readers stay out of other
    tests' segments)."""
    if request.param == "sqlite":
        yield str(request.getfixturevalue("sqlite_url"))
        return
    name, url = await dispatch_seed.fresh_postgres()
    try:
        yield url
    finally:
        await infra.drop_database(name)


@pytest.fixture(scope="module")
def one_node() -> Iterator[RabbitNodes]:
    """One RabbitMQ node of the module's own."""
    with own_nodes(1) as nodes:
        yield nodes


@pytest.fixture(scope="module")
def cluster() -> Iterator[RabbitNodes]:
    """A 3-node RabbitMQ cluster of the module's own."""
    with own_nodes(3) as nodes:
        yield nodes
