"""The database gate: which errors are an outage, retries in place, pausing and resuming."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.dispatcher.database_gate import DatabaseGate, is_outage
from shared.db.engine import create_engine


class _DriverError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"sqlstate {sqlstate}")
        self.sqlstate = sqlstate


class _Consumer:
    def __init__(self) -> None:
        self.calls: list[bool] = []
        self.resumed = asyncio.Event()

    def set_paused(self, paused: bool) -> None:
        self.calls.append(paused)
        if not paused:
            self.resumed.set()


def _dbapi(sqlstate: str, *, invalidated: bool = False) -> DBAPIError:
    return DBAPIError(
        "UPDATE delivery", {}, _DriverError(sqlstate), connection_invalidated=invalidated
    )


@pytest.mark.parametrize(
    ("error", "outage"),
    [
        (ConnectionRefusedError("refused"), True),
        (TimeoutError(), True),
        (_dbapi("08003", invalidated=True), True),  # the backend was terminated mid-statement
        (_dbapi("57P01"), True),  # admin shutdown
        (_dbapi("55000"), True),  # database is not currently accepting connections
        (_dbapi("53300"), True),  # too many connections
        (_dbapi("25006"), True),  # read-only: the primary just became a standby
        (OperationalError("UPDATE", {}, _DriverError("")), True),  # SQLite: database is locked
        (IntegrityError("INSERT", {}, _DriverError("23505")), False),
        (_dbapi("42P01"), False),  # undefined table: a bug, not an outage
        (ValueError("bad value"), False),
    ],
)
def test_an_outage_is_told_from_a_wrong_statement(error: BaseException, outage: bool) -> None:
    assert is_outage(error) is outage


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'gate.db'}")
    try:
        yield engine
    finally:
        await engine.dispose()


async def test_a_write_is_retried_through_an_outage_and_intake_pauses_meanwhile(
    engine: AsyncEngine,
) -> None:
    gate = DatabaseGate(engine=engine, initial_delay_s=0.001, max_delay_s=0.01)
    consumer = _Consumer()
    gate.attach(consumer)
    tries = 0

    async def write() -> str:
        nonlocal tries
        tries += 1
        if tries < 4:
            raise _dbapi("08003", invalidated=True)
        return "written"

    try:
        assert await gate.write(write, what="test") == "written"
        await asyncio.wait_for(consumer.resumed.wait(), 5)
    finally:
        await gate.close()
    assert tries == 4
    assert consumer.calls == [True, False], "paused once for the outage, resumed once"
    assert gate.outages == 1


async def test_an_error_that_is_not_an_outage_is_raised_after_a_few_tries(
    engine: AsyncEngine,
) -> None:
    gate = DatabaseGate(engine=engine, initial_delay_s=0.001, attempts_on_error=3)
    consumer = _Consumer()
    gate.attach(consumer)
    tries = 0

    async def write() -> None:
        nonlocal tries
        tries += 1
        raise IntegrityError("INSERT", {}, _DriverError("23505"))

    with pytest.raises(IntegrityError):
        await gate.write(write, what="test")
    await gate.close()
    assert tries == 3
    assert consumer.calls == [], "a wrong statement does not stop intake"
