"""Async engine and session factory built from ``NEWSLETTER_DATABASE_URL``.

Plain ``sqlite:///`` and ``postgresql://`` URLs are accepted and mapped to their async drivers
(aiosqlite, asyncpg). Engines are created by a composition root and disposed by its lifespan.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.util.concurrency import await_
from sqlmodel.ext.asyncio.session import AsyncSession

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+psycopg": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
}


def async_url(url: str) -> str:
    """Map a user-facing database URL to the async driver the suite uses."""
    parsed = make_url(url)
    driver = _ASYNC_DRIVERS.get(parsed.drivername, parsed.drivername)
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(
    url: str,
    *,
    echo: bool = False,
    pool_size: int = 10,
    custom_plans: bool = False,
    quick_ping: bool = False,
) -> AsyncEngine:
    """Create the process's engine; SQLite gets WAL and a busy timeout for concurrent writers.

    ``custom_plans`` (PostgreSQL) plans every execution of a prepared statement with its
    values. asyncpg prepares and caches statements, and after five executions PostgreSQL may
    switch to a generic plan made from the statistics of that moment: the dispatcher's batched
    ``UPDATE ... WHERE id IN (...)`` on a ``delivery`` table that was empty when the send began
    kept a sequential-scan plan while the table grew to 200,000 rows, and the send slowed from
    1,100 to 350 messages/s until autovacuum analyzed the table.

    ``quick_ping`` (PostgreSQL) checks a pooled connection before use with one round trip
    (:func:`_quick_ping`) instead of SQLAlchemy's three.
    """
    target = async_url(url)
    kwargs: dict[str, Any] = {"echo": echo}
    if is_sqlite(target):
        database = make_url(target).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
        if custom_plans:
            kwargs["connect_args"] = {"server_settings": {"plan_cache_mode": "force_custom_plan"}}
    engine = create_async_engine(target, **kwargs)
    if quick_ping and not is_sqlite(target):
        engine.dialect.do_ping = _quick_ping  # type: ignore[method-assign]
    if is_sqlite(target):
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _quick_ping(dbapi_connection: Any) -> bool:
    """The pool's check of a connection before use: ``SELECT 1`` as one simple query.

    SQLAlchemy's asyncpg ping runs ``BEGIN``, a prepared ``;`` and ``ROLLBACK`` (the transaction
    for pgbouncer's transaction mode, where a prepared statement outside one may land on another
    server connection): three round trips per checkout, about 5 % of a dispatcher's CPU, which
    checks out a connection for every claim and outcome batch. A simple query prepares nothing,
    so it needs no transaction. A failure goes through the adapter's own error translation, so
    the pool still recognises a dropped connection and invalidates the pool. (Not ``;``:
    asyncpg's simple-query path fails on the empty reply an empty query gets.)
    """
    try:
        await_(dbapi_connection._connection.execute("SELECT 1"))
    except Exception as error:
        dbapi_connection._handle_exception(error)
    return True


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
