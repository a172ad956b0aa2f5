"""Outcome writes that survive a database hiccup, and no intake while the database is away.

After an SMTP transaction the outcome row is the only record that the mail went out: a failed
write must never turn into a requeued job and a second SMTP transaction. :meth:`DatabaseGate.write`
retries it in place with exponential backoff; every try begins a new transaction on a connection
checked out afresh (the engine invalidates its pool when it meets a dropped connection, and pings
each connection before use), and the writes are idempotent.

While the database is away the gate is *down*: the consumers attached to it cancel their AMQP
consumers, so no new jobs arrive (they wait in the queue, or go back to it when their claim
fails), and the jobs in hand keep their outcomes in memory, unacked, until they are written. A
probe (``SELECT 1``) with the same backoff brings the gate up, and the consumers resume.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import structlog
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.tasks import cancel_and_wait

log = structlog.get_logger(__name__)
T = TypeVar("T")

# SQLSTATE classes of a database that is (briefly) not there: connection exception, insufficient
# resources (too many connections), operator intervention (terminated backend, shutdown,
# cannot connect now); 55000 is also "database is not currently accepting connections", and
# 25006 (read-only transaction) what a primary that has just become a standby answers.
_OUTAGE_SQLSTATE_CLASSES = frozenset({"08", "53", "57"})
_OUTAGE_SQLSTATES = frozenset({"55000", "25006"})


class Pausable(Protocol):
    def set_paused(self, paused: bool) -> None: ...


def is_outage(err: BaseException) -> bool:
    """True if ``err`` says the database is unreachable rather than that a statement is wrong."""
    if isinstance(err, OSError | TimeoutError):
        return True
    if not isinstance(err, DBAPIError):
        return False
    if err.connection_invalidated or isinstance(err, OperationalError | InterfaceError):
        return True
    sqlstate = str(getattr(err.orig, "sqlstate", "") or "")
    return sqlstate[:2] in _OUTAGE_SQLSTATE_CLASSES or sqlstate in _OUTAGE_SQLSTATES


class DatabaseGate:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        initial_delay_s: float = 0.05,
        max_delay_s: float = 5.0,
        attempts_on_error: int = 5,
    ) -> None:
        self._engine = engine
        self._initial = initial_delay_s
        self._max = max_delay_s
        self._attempts_on_error = attempts_on_error  # for errors that are not an outage
        self._consumers: list[Pausable] = []
        self._probe: asyncio.Task[None] | None = None
        self.outages = 0  # how often the gate went down (for tests and logs)

    @property
    def down(self) -> bool:
        return self._probe is not None and not self._probe.done()

    def attach(self, consumer: Pausable) -> None:
        self._consumers.append(consumer)
        if self.down:
            consumer.set_paused(True)

    async def write(self, operation: Callable[[], Awaitable[T]], *, what: str) -> T:
        """Run ``operation`` (an idempotent write) until it succeeds.

        An outage is retried for as long as it lasts; any other error ``attempts_on_error``
        times, then raised.
        """
        delay = self._initial
        failures = 0
        while True:
            try:
                return await operation()
            except Exception as err:
                failures += 1
                if not self.report(err) and failures >= self._attempts_on_error:
                    raise
                log.warning(
                    "database_write_retried",
                    what=what,
                    failures=failures,
                    delay_s=round(delay, 3),
                    error=f"{type(err).__name__}: {err}"[:300],
                )
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self._max)

    def report(self, err: BaseException) -> bool:
        """Note a failed database call; True (and the gate goes down) if it was an outage."""
        if not is_outage(err):
            return False
        if not self.down:
            self.outages += 1
            log.warning("database_unavailable", error=f"{type(err).__name__}: {err}"[:300])
            for consumer in self._consumers:
                consumer.set_paused(True)
            self._probe = asyncio.create_task(self._wait_until_back())
        return True

    async def _wait_until_back(self) -> None:
        delay = self._initial
        while True:
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            try:
                async with self._engine.connect() as connection:
                    await connection.execute(text("SELECT 1"))
            except Exception as err:
                if not is_outage(err):
                    log.warning("database_probe_failed", error=f"{type(err).__name__}"[:100])
                delay = min(delay * 2, self._max)
                continue
            break
        log.info("database_available")
        for consumer in self._consumers:
            consumer.set_paused(False)

    async def close(self) -> None:
        await cancel_and_wait(self._probe)
        self._probe = None
