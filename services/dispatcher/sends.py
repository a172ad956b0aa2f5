"""Sends as the workers see them (status, cached briefly) and as operators control them.

Pause, resume and cancel write the ``send`` row and publish ``SendControlled`` so that a
dispatcher refreshes at once; every dispatcher also re-reads a send's status at least every
second, since the control queue hands each event to one consumer only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import bindparam, func, text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.dispatcher.errors import SendNotFound
from shared.db.tables.deliveries import Delivery, DeliveryStatus, Send, SendStatus
from shared.db.tables.timestamps import UTCDateTime, utcnow

Sessions = async_sessionmaker[AsyncSession]
STATUS_TTL_S = 1.0


class SendDirectory:
    """The status of each send, re-read at most every :data:`STATUS_TTL_S` seconds."""

    def __init__(self, *, sessions: Sessions, ttl_s: float = STATUS_TTL_S) -> None:
        self._sessions = sessions
        self._ttl = ttl_s
        self._cache: dict[str, tuple[float, str | None]] = {}
        self._reading: dict[str, asyncio.Future[str | None]] = {}

    def forget(self, send_id: str) -> None:
        self._cache.pop(send_id, None)
        self._reading.pop(send_id, None)  # a read already running may predate the change

    async def status(self, send_id: str) -> str | None:
        """The send's status, or None if there is no such send."""
        now = time.monotonic()
        cached = self._cache.get(send_id)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        # One read per send at a time: the hundreds of jobs in flight that find the entry
        # expired at the same moment share it instead of each querying the database.
        reading = self._reading.get(send_id)
        if reading is None:
            reading = asyncio.ensure_future(self._read(send_id, now))
            self._reading[send_id] = reading
            reading.add_done_callback(lambda done: self._read_done(send_id, done))
        return await asyncio.shield(reading)

    def _read_done(self, send_id: str, done: asyncio.Future[str | None]) -> None:
        if self._reading.get(send_id) is done:
            del self._reading[send_id]

    async def _read(self, send_id: str, now: float) -> str | None:
        async with self._sessions() as session:
            found = (await session.exec(select(Send.status).where(Send.id == send_id))).first()
        if found is not None:  # an unknown send may appear any moment: never cache its absence
            self._cache[send_id] = (now, found)
        if len(self._cache) > 1024:
            self._cache.pop(next(iter(self._cache)))
        return found


@dataclass
class SendReport:
    send_id: str
    issue_key: str
    status: str
    total: int
    test_to: str | None
    by_language: dict[str, dict[str, int]] = field(default_factory=dict)
    redriven: int = 0  # jobs the reconciler published again (lost job, expired lease)
    redriven_deliveries: int = 0  # deliveries re-driven at least once

    @property
    def open(self) -> int:
        open_states = {"pending", "queued", "sending", "deferred"}
        return sum(
            n for counts in self.by_language.values() for s, n in counts.items() if s in open_states
        )


async def report(sessions: Sessions, *, send_id: str) -> SendReport:
    """Progress of a send: deliveries by language and status."""
    async with sessions() as session:
        send = await session.get(Send, send_id)
        if send is None:
            raise SendNotFound(f"no send {send_id}")
        rows = await session.exec(
            select(Delivery.language, Delivery.status, func.count())
            .where(Delivery.send_id == send_id)
            .group_by(col(Delivery.language), col(Delivery.status))
        )
        result = SendReport(
            send_id=send.id,
            issue_key=send.issue_key,
            status=send.status,
            total=send.total,
            test_to=send.test_to,
        )
        for language, status, count in rows:
            result.by_language.setdefault(language, {})[status] = int(count)
        redriven = (
            await session.exec(
                select(func.coalesce(func.sum(Delivery.redriven), 0), func.count())
                .where(Delivery.send_id == send_id)
                .where(col(Delivery.redriven) > 0)
            )
        ).one()
        result.redriven = int(redriven[0])
        result.redriven_deliveries = int(redriven[1])
    return result


async def set_status(sessions: Sessions, *, send_id: str, action: str) -> str:
    """Apply pause, resume or cancel to the send row; returns the new status."""
    now = utcnow()
    async with sessions() as session:
        send = await session.get(Send, send_id)
        if send is None:
            raise SendNotFound(f"no send {send_id}")
        if send.status in {SendStatus.DONE, SendStatus.CANCELLED}:
            return send.status
        if send.status == SendStatus.SCHEDULED and action != "cancel":
            return send.status  # nothing runs yet: reschedule or cancel it
        if action == "pause":
            send.status = SendStatus.PAUSED
        elif action == "resume":
            send.status = SendStatus.RUNNING if send.planned_at else SendStatus.PLANNING
        elif action == "cancel":
            send.status = SendStatus.CANCELLED
            send.cancelled_at = now
            # Jobs still in queues find their delivery cancelled and skip it; a delivery in
            # the middle of its SMTP transaction finishes and records what happened.
            await session.execute(
                text(
                    "UPDATE delivery SET status = :cancelled, updated_at = :now "
                    "WHERE send_id = :send_id AND status IN :open"
                ).bindparams(
                    bindparam("open", expanding=True), bindparam("now", type_=UTCDateTime())
                ),
                {
                    "cancelled": str(DeliveryStatus.CANCELLED),
                    "now": now,
                    "send_id": send_id,
                    "open": [
                        str(DeliveryStatus.PENDING),
                        str(DeliveryStatus.QUEUED),
                        str(DeliveryStatus.DEFERRED),
                    ],
                },
            )
            send.finished_at = now
        else:
            raise ValueError(f"unknown action {action!r}")
        session.add(send)
        await session.commit()
        return send.status


@dataclass
class SendListing:
    send_id: str
    issue_key: str
    status: str
    intent: str
    scheduled_at: datetime | None
    schedule_tz: str | None
    local_time: str | None
    started_at: datetime | None
    finished_at: datetime | None
    total: int

    def as_dict(self) -> dict[str, object]:
        def at(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "send_id": self.send_id,
            "issue_key": self.issue_key,
            "status": self.status,
            "intent": self.intent,
            "scheduled_at": at(self.scheduled_at),
            "schedule_tz": self.schedule_tz,
            "local_time": self.local_time,
            "started_at": at(self.started_at),
            "finished_at": at(self.finished_at),
            "total": self.total,
        }


async def listing(
    sessions: Sessions, *, statuses: Sequence[str] = (), limit: int = 50
) -> list[SendListing]:
    """Sends newest first (scheduled ones by their start), optionally of some statuses."""
    query = select(Send).order_by(
        col(Send.scheduled_at).desc().nulls_last(), col(Send.created_at).desc()
    )
    if statuses:
        query = query.where(col(Send.status).in_(list(statuses)))
    async with sessions() as session:
        rows = (await session.exec(query.limit(limit))).all()
    return [
        SendListing(
            send_id=r.id,
            issue_key=r.issue_key,
            status=r.status,
            intent=r.intent,
            scheduled_at=r.scheduled_at,
            schedule_tz=r.schedule_tz,
            local_time=r.local_time,
            started_at=r.started_at,
            finished_at=r.finished_at,
            total=r.total,
        )
        for r in rows
    ]
