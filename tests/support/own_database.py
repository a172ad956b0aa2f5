"""What the ``own_database`` fixture (:mod:`tests.support.dispatch_fixtures`) hands a test."""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

# The test's own database connections carry this name: a fault that terminates the
# dispatcher's backends spares the test's observer.
OBSERVER = "newsletter-test-observer"


class OwnDatabase(NamedTuple):
    """A PostgreSQL database of one test's own: its name, URL and the test's sessions."""

    name: str
    url: str
    sessions: async_sessionmaker[AsyncSession]
