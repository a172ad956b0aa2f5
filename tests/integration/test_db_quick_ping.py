"""The dispatcher's engine checks a pooled connection with one round trip, and still replaces a
connection the server dropped (``shared/db/engine.py``, ``quick_ping``)."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from sqlalchemy import text

from shared.db.engine import create_engine

pytestmark = pytest.mark.integration


async def test_a_checkout_pings_once_without_a_transaction_and_a_dropped_connection_is_replaced(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_engine(postgres_url, pool_size=1, quick_ping=True)
    seen: list[str] = []
    execute, fetchrow = asyncpg.Connection.execute, asyncpg.Connection.fetchrow
    start = asyncpg.transaction.Transaction.start

    async def counted_execute(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(f"execute {query}")
        return await execute(self, query, *args, **kwargs)

    async def counted_fetchrow(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(f"fetchrow {query}")
        return await fetchrow(self, query, *args, **kwargs)

    async def counted_start(self: Any) -> Any:
        seen.append("begin")
        return await start(self)

    try:
        async with engine.connect() as connection:
            pid = int((await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one())
        monkeypatch.setattr(asyncpg.Connection, "execute", counted_execute)
        monkeypatch.setattr(asyncpg.Connection, "fetchrow", counted_fetchrow)
        monkeypatch.setattr(asyncpg.transaction.Transaction, "start", counted_start)
        async with engine.connect() as connection:  # a checkout: the ping, then the query
            seen.append("checked out")
            await connection.execute(text("SELECT 1"))
        pings = seen[: seen.index("checked out")]
        assert pings == ["execute SELECT 1"], f"one simple query per checkout: {pings}"
        monkeypatch.undo()
        killer = await asyncpg.connect(postgres_url)
        try:
            await killer.execute("SELECT pg_terminate_backend($1)", pid)
        finally:
            await killer.close()
        async with engine.connect() as connection:  # the ping finds it dead: a new one
            other = int((await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one())
        assert other != pid, "the dropped connection was replaced before use"
    finally:
        await engine.dispose()
