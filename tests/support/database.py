"""A test's way into a database that the services it runs also use: to seed it and read it back.

Each helper opens an engine of its own (SQLite or PostgreSQL, by the URL) and disposes of it on
the way out, so a test holds no pool open on a database it hands to the processes under test::

    async with sessions_on(database_url) as sessions:
        await save_tracked_links(sessions, links=...)
    async with session_on(database_url) as session:
        found = await session.exec(select(Subscriber).where(Subscriber.email == email))
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db.engine import create_engine, session_factory


@contextlib.asynccontextmanager
async def sessions_on(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A session factory on ``database_url``, its engine disposed of at the end."""
    engine = create_engine(database_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def session_on(database_url: str) -> AsyncIterator[AsyncSession]:
    """One session on ``database_url`` (commit it yourself), its engine disposed of at the end."""
    async with sessions_on(database_url) as sessions, sessions() as session:
        yield session


async def column_names(database_url: str, *tables: str) -> dict[str, list[str]]:
    """The columns of each of ``tables`` as the database has them, in their order."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda sync: {
                    table: [c["name"] for c in inspect(sync).get_columns(table)] for table in tables
                }
            )
    finally:
        await engine.dispose()
