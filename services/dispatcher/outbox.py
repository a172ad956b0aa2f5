"""Publishing the outbox again: deliveries of running sends left ``pending``.

A paused send's jobs are not kept cycling through a delay queue: a worker that meets one puts
its delivery back to ``pending`` (the outbox state) and acks it, so a send paused for a day
costs nothing. Jobs held by an open circuit breaker are parked the same way, with ``due_at``
at the end of the breaker's pause: the sweep leaves them until then.

When the send runs again, :class:`OutboxSweeper` finds its pending rows and the
planner's relay publishes them (confirms first, then ``queued``). The sweep runs every
``interval_s`` and at once after a resume; it also picks up any pending row of a running send
that was missed, for whatever reason. A row is only taken once it has been pending for
``settle_s``, so that a dispatcher still holding the old "paused" status for a moment does not
bounce it straight back. Two dispatchers sweeping the same rows publish two jobs for one
delivery; the workers' claim sends it once.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import structlog
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.dispatcher.planner import Planner
from shared.clock import SYSTEM_CLOCK, Clock
from shared.db.tables.deliveries import DeliveryStatus, SendStatus
from shared.db.tables.timestamps import UTCDateTime
from shared.messaging.publisher import PublishError
from shared.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

_SENDS_WITH_PARKED_ROWS = text(
    "SELECT s.id FROM send s WHERE s.status = :running AND EXISTS ("
    "SELECT 1 FROM delivery d WHERE d.send_id = s.id AND d.status = :pending "
    "AND d.updated_at < :cutoff AND (d.due_at IS NULL OR d.due_at <= :now))"
).bindparams(bindparam("cutoff", type_=UTCDateTime()), bindparam("now", type_=UTCDateTime()))


class OutboxSweeper:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        planner: Planner,
        interval_s: float,
        settle_s: float = 2.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._clock = clock
        self._engine = engine
        self._planner = planner
        self._interval = interval_s
        self._settle = settle_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    def wake(self) -> None:
        """A send was resumed: sweep as soon as the other dispatchers have seen it."""
        self._wake.set()

    async def sweep(self) -> int:
        """Relay the pending rows of every running send; returns how many sends had some."""
        now = self._clock.now()
        cutoff = now - timedelta(seconds=self._settle)
        async with self._engine.connect() as connection:
            rows = await connection.execute(
                _SENDS_WITH_PARKED_ROWS,
                {
                    "running": str(SendStatus.RUNNING),
                    "pending": str(DeliveryStatus.PENDING),
                    "cutoff": cutoff,
                    "now": now,
                },
            )
            send_ids = [str(row[0]) for row in rows]
        for send_id in send_ids:
            with structlog.contextvars.bound_contextvars(send_id=send_id):
                try:
                    published = await self._planner.relay(send_id)
                except PublishError as err:  # the rows stay pending: the next sweep retries
                    log.warning("outbox_relay_failed", error=str(err)[:300])
                    continue
                log.info("outbox_relayed", jobs=published)
        return len(send_ids)

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            if self._wake.is_set():
                self._wake.clear()
                await asyncio.sleep(self._settle)
            try:
                await self.sweep()
            except Exception:
                log.exception("outbox_sweep_failed")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
