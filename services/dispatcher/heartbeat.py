"""Each dispatcher process's heartbeat: a ``dispatcher_process`` row it refreshes.

A claim names its process (``delivery.claimed_by``). While the process beats, its ``sending``
rows are its own until their lease ends, even if the database went away for a while and a
redelivered copy of a job turns up meanwhile. A process killed mid-send stops beating: after
``stale_s`` its rows are taken over (a redelivered job re-claims them, the reconciler re-drives
them), long before their lease would end. A process that stops cleanly deletes its row.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import structlog
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.tables.timestamps import UTCDateTime, utcnow
from shared.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

_BEAT = text("UPDATE dispatcher_process SET seen_at = :now WHERE id = :id").bindparams(
    bindparam("now", type_=UTCDateTime())
)
_REGISTER = text(
    "INSERT INTO dispatcher_process (id, started_at, seen_at) VALUES (:id, :now, :now)"
).bindparams(bindparam("now", type_=UTCDateTime()))
_FORGET = text("DELETE FROM dispatcher_process WHERE id = :id")
_FORGET_OLD = text("DELETE FROM dispatcher_process WHERE seen_at < :before").bindparams(
    bindparam("before", type_=UTCDateTime())
)


class ProcessHeartbeat:
    def __init__(self, *, engine: AsyncEngine, interval_s: float, stale_s: float) -> None:
        self.process_id = str(uuid.uuid4())
        self._engine = engine
        self._interval = interval_s
        self._stale = stale_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(_REGISTER, {"id": self.process_id, "now": utcnow()})
            # Processes gone for a day are history: keep the table small.
            await connection.execute(_FORGET_OLD, {"before": utcnow() - timedelta(days=1)})
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                async with self._engine.begin() as connection:
                    beat = await connection.execute(_BEAT, {"id": self.process_id, "now": utcnow()})
                    if not getattr(beat, "rowcount", 1):
                        await connection.execute(
                            _REGISTER, {"id": self.process_id, "now": utcnow()}
                        )
            except Exception as err:  # the database is away: beat again next time
                log.warning("heartbeat_failed", error=str(err)[:200])

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        try:
            async with self._engine.begin() as connection:
                await connection.execute(_FORGET, {"id": self.process_id})
        except Exception as err:
            log.warning("heartbeat_forget_failed", error=str(err)[:200])
