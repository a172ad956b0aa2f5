"""Scheduled sends: stored ``scheduled`` at render time, started when due, exactly once.

``newsletter issue send PATH --at ... --tz ...`` renders and checks the issue at once (the
renderer stores its editions) and the planner records the send as ``scheduled`` with its
``scheduled_at``; nothing waits in a queue meanwhile. Every dispatcher that plans runs a
:class:`Scheduler` beside its planner: every ``schedule_poll_s`` it looks for scheduled sends
that are due, takes each with a conditional ``UPDATE`` of ``start_requested_at`` (of several
dispatchers one wins; the database decides, not a process's memory), re-checks cheaply that
the send can start (its editions are stored, one per segment) and publishes its ``PlanSend``
with a confirm. The planner then moves the send from ``scheduled`` to ``planning`` with a
second conditional ``UPDATE`` (:func:`start_if_due`), so a duplicate start (a scheduler that
died between its publish and its commit, a redelivered message) plans nothing twice: the
delivery rows' unique keys already make a re-plan harmless.

A taken start that never reached the planner (its process died before the publish) is taken
again after :data:`START_RETRY_S`. A send can be cancelled or rescheduled until it starts
(:func:`reschedule`): rescheduling clears ``start_requested_at``, and a start message that
arrives for a send no longer due (moved later, not taken again since) is ignored. A send a
scheduler took starts even if the planner's clock is a little behind the scheduler's (two
hosts): whether it is due was decided once, by the take.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.dispatcher.errors import DispatcherError, SendNotFound
from shared.clock import Clock
from shared.db.tables.deliveries import Send, SendStatus
from shared.db.tables.editions import Edition
from shared.db.tables.timestamps import UTCDateTime
from shared.messaging.publisher import Publisher, PublishError
from shared.messaging.schemas import PlanSend, SendSchedule
from shared.messaging.topology import PLAN_SEND
from shared.tasks import cancel_and_wait

log = structlog.get_logger(__name__)
Sessions = async_sessionmaker[AsyncSession]

START_RETRY_S = 60.0  # a taken start whose send is still scheduled after this is taken again

_DUE = text(
    "SELECT id FROM send WHERE status = :scheduled AND scheduled_at <= :now "
    "AND (start_requested_at IS NULL OR start_requested_at <= :retry_before) "
    "ORDER BY scheduled_at, id LIMIT 100"
).bindparams(bindparam("now", type_=UTCDateTime()), bindparam("retry_before", type_=UTCDateTime()))
_TAKE = text(
    "UPDATE send SET start_requested_at = :now WHERE id = :id AND status = :scheduled "
    "AND scheduled_at <= :now "
    "AND (start_requested_at IS NULL OR start_requested_at <= :retry_before)"
).bindparams(bindparam("now", type_=UTCDateTime()), bindparam("retry_before", type_=UTCDateTime()))
# Due by this planner's clock, or taken by a scheduler since the send was last (re)scheduled:
# a scheduler on a host whose clock runs a little ahead must not have its start ignored by a
# planner whose clock runs a little behind (that start would wait START_RETRY_S).
_START = text(
    "UPDATE send SET status = :planning, started_at = :now "
    "WHERE id = :id AND status = :scheduled "
    "AND (scheduled_at <= :now OR start_requested_at IS NOT NULL)"
).bindparams(bindparam("now", type_=UTCDateTime()))
_RESCHEDULE = text(
    "UPDATE send SET scheduled_at = :at, schedule_tz = :tz, start_requested_at = NULL "
    "WHERE id = :id AND status = :scheduled"
).bindparams(bindparam("at", type_=UTCDateTime()))


class NotScheduled(DispatcherError):
    """The send exists but has started (or ended): it can no longer be rescheduled."""


async def start_if_due(sessions: Sessions, *, send_id: str, now: datetime) -> str:
    """Move a due ``scheduled`` send to ``planning`` (once, whoever asks); its status after."""
    async with sessions() as session:
        taken = await session.execute(
            _START,
            {
                "id": send_id,
                "planning": str(SendStatus.PLANNING),
                "scheduled": str(SendStatus.SCHEDULED),
                "now": now,
            },
        )
        await session.commit()
        if taken.rowcount == 1:  # type: ignore[attr-defined]
            log.info("scheduled_send_started", send_id=send_id)
        status = (await session.exec(select(Send.status).where(Send.id == send_id))).first()
    return status or SendStatus.CANCELLED


def schedule_of(send: Send) -> SendSchedule | None:
    if send.scheduled_at is None and send.local_time is None:
        return None
    return SendSchedule(
        start_at=send.scheduled_at, time_zone=send.schedule_tz, local_time=send.local_time
    )


def plan_command(send: Send) -> PlanSend:
    """The ``PlanSend`` that starts a scheduled send (what the renderer asked for)."""
    fallbacks = dict(item.split("=", 1) for item in send.fallbacks.split(",") if "=" in item)
    return PlanSend(
        message_id=f"start-{send.id}",
        send_id=send.id,
        issue_key=send.issue_key,
        segments=[s for s in send.languages.split(",") if s],
        fallbacks=fallbacks,
        test_to=send.test_to,
        intent=send.intent if send.intent != "test" else "first",
        schedule=schedule_of(send),
    )


async def ready_to_start(sessions: Sessions, send: Send) -> list[str]:
    """The cheap re-check at start: the segments whose edition is not stored (none: ready)."""
    async with sessions() as session:
        stored = set(
            (
                await session.exec(select(Edition.language).where(col(Edition.send_id) == send.id))
            ).all()
        )
    return [s for s in send.languages.split(",") if s and s not in stored]


async def reschedule(sessions: Sessions, *, send_id: str, at: datetime, tz: str | None) -> Send:
    """Move a send that has not started to ``at``; raise :class:`NotScheduled` otherwise."""
    async with sessions() as session:
        changed = await session.execute(
            _RESCHEDULE,
            {"id": send_id, "at": at, "tz": tz, "scheduled": str(SendStatus.SCHEDULED)},
        )
        await session.commit()
        send = await session.get(Send, send_id)
    if send is None:
        raise SendNotFound(f"no send {send_id}")
    if changed.rowcount != 1:  # type: ignore[attr-defined]
        raise NotScheduled(f"send {send_id} is {send.status}: only a scheduled send moves")
    log.info("send_rescheduled", send_id=send_id, at=at.isoformat())
    return send


@dataclass
class Scheduler:
    """Starts the scheduled sends that are due (one loop per planning dispatcher)."""

    sessions: Sessions
    publisher: Publisher
    clock: Clock
    interval_s: float
    passes: Counter | None = None  # newsletter_scheduler_passes_total
    _task: asyncio.Task[None] | None = None
    _wake: asyncio.Event | None = None

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._loop())

    def wake(self) -> None:
        """Look now (a test moved its clock, an operator rescheduled)."""
        if self._wake is not None:
            self._wake.set()

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _loop(self) -> None:
        assert self._wake is not None
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("scheduler_pass_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()

    async def tick(self) -> list[str]:
        """One pass: publish the start of every due send this process takes; their ids."""
        now = self.clock.now()
        params = {
            "scheduled": str(SendStatus.SCHEDULED),
            "now": now,
            "retry_before": now - timedelta(seconds=START_RETRY_S),
        }
        async with self.sessions() as session:
            due = [str(r) for r in (await session.execute(_DUE, params)).scalars()]
        started: list[str] = []
        for send_id in due:
            if await self._start(send_id, params):
                started.append(send_id)
        if self.passes is not None:
            self.passes.inc()
        return started

    async def _start(self, send_id: str, params: dict[str, object]) -> bool:
        async with self.sessions() as session:
            taken = await session.execute(_TAKE, {**params, "id": send_id})
            await session.commit()
            if taken.rowcount != 1:  # type: ignore[attr-defined]
                return False  # another dispatcher took it
            send = await session.get(Send, send_id)
        if send is None:
            return False
        missing = await ready_to_start(self.sessions, send)
        with structlog.contextvars.bound_contextvars(send_id=send_id):
            if missing:
                # Retried after START_RETRY_S: editions written late (a renderer catching up)
                # still start the send; an operator sees it in ``send list`` meanwhile.
                log.warning("scheduled_send_not_ready", missing_editions=missing)
                return False
            try:
                await self.publisher.publish(plan_command(send), routing_key=PLAN_SEND)
            except PublishError as err:
                log.warning("scheduled_start_unpublished", error=str(err)[:300])
                return False
            log.info("scheduled_send_due", scheduled_at=str(send.scheduled_at))
        return True


def schedule_columns(
    schedule: SendSchedule | None, *, now: datetime, later: bool
) -> dict[str, Any]:
    """The ``send`` columns of a new send: ``scheduled_at`` when it starts later, else
    ``started_at`` now; the local hour either way."""
    columns: dict[str, Any] = {"started_at": None if later else now}
    if schedule is not None:
        columns["scheduled_at"] = schedule.start_at
        columns["schedule_tz"] = schedule.time_zone
        columns["local_time"] = schedule.local_time
    return columns


def passes_counter(registry: CollectorRegistry) -> Counter:
    return Counter(
        "newsletter_scheduler_passes_total",
        "Passes of the scheduler looking for scheduled sends that are due.",
        registry=registry,
    )
