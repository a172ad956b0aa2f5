"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db.engine import create_engine, session_factory


@pytest.fixture
async def sessions(sqlite_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on the test's own migrated SQLite database (a module may override this)."""
    engine = create_engine(sqlite_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()
