"""The planner: ``PlanSend`` -> one delivery row per (send, subscriber, segment) -> jobs.

A reader who chose several editions gets one delivery per edition. A segment served by a
fallback (``be`` gets the ``ru`` edition) leaves out readers who are also in the fallback's own
segment, so no one gets the same text twice. An ``only_new`` send leaves out readers who have
the issue's edition from an earlier send (``RECEIVED_STATUSES``). Two sends of one issue planned
at the same instant would each miss the other's uncommitted rows, so every page of a non-test
send is written under a transaction-level advisory lock on the issue (PostgreSQL; SQLite has one
writer anyway): the second page waits for the first to commit, and its ``NOT EXISTS`` sees it.

The audience is streamed segment by segment in keyset pages (``subscriber.id > last``), never
held in memory. Each page is written with ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``
(the unique keys make a re-plan harmless) as ``pending`` rows: the outbox. The relay then
takes pending rows in batches, marks them ``queued`` with a deadline (by when their job should
have been consumed) and publishes them with publisher confirms; a batch the broker refuses goes
back to ``pending``. A planner that dies anywhere in between leaves its ``PlanSend`` unacked;
the broker redelivers it and the planner picks up where the ledger says it was: rows already
written are skipped, pending rows are published. A relay the broker refuses (no route, no
confirm in time) does not fail the ``PlanSend``: its batch goes back to ``pending`` and planning
goes on, so every row is written; the rows wait in the outbox for the next relay (the outbox
sweeper's, once the send runs). A ``PlanSend`` lost all the same (purged, dead-lettered) leaves
the send in ``planning``: the reconciler publishes it again once the planning has made no
progress for ``dispatch_planning_stale_s``. A crash after the ``queued`` commit but before
the confirms leaves that one batch queued without jobs: the reconciler re-drives it at its
deadline (``dispatch_queued_deadline_s`` from the mark; see
:mod:`services.dispatcher.reconciler`).

The relay is also how a delivery goes out again: parked while paused or held by an open
breaker (``pending``, not before its ``due_at``), due for another attempt, or re-driven by the
reconciler. Whatever brought a row to the relay, a reader in their quiet hours keeps it
``pending`` until their end (:class:`~services.dispatcher.local_hours.QuietGate`). A job
carries its retry count (``x-retry``), its first attempt from the ledger and its reader's
zone, and a queued row gets the deadline by which its job should have been consumed.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta

import structlog
from aio_pika.abc import AbstractIncomingMessage
from sqlalchemy import TextClause, TextualSelect, bindparam, column, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.dispatcher import cadence, ledger, local_hours, scheduler, warmup
from services.dispatcher.metrics import DispatcherMetrics
from services.dispatcher.retry import RETRY_HEADER, dead_letter
from services.dispatcher.settings import DispatcherSettings
from shared.addresses import address_domain
from shared.clock import SYSTEM_CLOCK, Clock
from shared.db.tables.deliveries import (
    RECEIVED_STATUSES,
    DeliveryKind,
    DeliveryStatus,
    Send,
    SendIntent,
    SendStatus,
)
from shared.db.tables.timestamps import UTCDateTime
from shared.messaging.publisher import Publisher, PublishError
from shared.messaging.schemas import DeliverIssue, PlanSend, UndecodableMessage, decode
from shared.messaging.topology import DELIVER_ISSUE

log = structlog.get_logger(__name__)
Sessions = async_sessionmaker[AsyncSession]

_AUDIENCE_PAGE = text(
    "SELECT s.id FROM subscriber s "
    "JOIN subscriber_language sl ON sl.subscriber_id = s.id AND sl.language = :language "
    "WHERE s.status = 'active' AND s.email IS NOT NULL AND s.id > :after "
    "ORDER BY s.id LIMIT :limit"
)
# One row per (send, subscriber, segment): a reader of several editions gets each of them.
# ``{due}`` and the cadence filter are constants of this package, never input.
_INSERT_PAGE_SQL = (
    "INSERT INTO delivery (dedupe_key, kind, send_id, subscriber_id, email, email_domain, "  # noqa: S608
    "language, status, attempts, smtp_reply, message_id, created_at, updated_at, due_at) "
    "SELECT 'send:' || :send_id || ':' || CAST(s.id AS VARCHAR(20)) || ':' || :language, "
    ":kind, :send_id, s.id, s.email, s.email_domain, :language, :pending, 0, '', '', :now, :now, "
    "{due} FROM subscriber s "
    "JOIN subscriber_language sl ON sl.subscriber_id = s.id AND sl.language = :language "
    "WHERE s.status = 'active' AND s.email IS NOT NULL AND s.id > :after AND s.id <= :last "
    "AND NOT EXISTS (SELECT 1 FROM suppression p "
    "WHERE p.email_hash = s.email_hash AND p.lifted_at IS NULL) " + cadence.CADENCE_FILTER
)
# A segment that gets another language's edition (a fallback) leaves out the readers who also
# chose that language: they get that edition once, as its own segment.
_NOT_IN_EDITION_SEGMENT = (
    "AND NOT EXISTS (SELECT 1 FROM subscriber_language other "
    "WHERE other.subscriber_id = s.id AND other.language = :edition_language) "
)
# --only-new: leave out readers who have this segment's edition of the issue from an earlier
# (non-test) send, or will get it from one still running.
_NOT_RECEIVED = (
    "AND NOT EXISTS (SELECT 1 FROM send e JOIN delivery d ON d.send_id = e.id "
    "WHERE e.issue_key = :issue_key AND e.id <> :send_id AND e.test_to IS NULL "
    "AND d.subscriber_id = s.id AND d.language = :language AND d.status IN :received) "
)


# Taken before each page's insert, in the page's own transaction (released by its commit).
_ISSUE_LOCK = text("SELECT pg_advisory_xact_lock(hashtext(:lock_key))")


async def write_audience_page(
    session: AsyncSession, insert: TextClause, params: dict[str, object], *, issue_key: str
) -> None:
    """Insert one page of a send's audience, serialized with other sends of the same issue.

    Under READ COMMITTED each statement sees what was committed when it began, so the insert
    runs after the lock is held and its ``NOT EXISTS`` sees the pages other sends of the issue
    committed meanwhile.
    """
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        await session.execute(_ISSUE_LOCK, {"lock_key": f"plan-issue:{issue_key}"})
    # The cadence filter's month: the page's own unless the planner gives the send's.
    params = {"month_start": cadence.month_start(params["now"]), **params}  # type: ignore[arg-type]
    await session.execute(insert, params)


def audience_insert(*, skip_edition_segment: bool, only_new: bool, due: str = "NULL") -> TextClause:
    # ``due``: each reader's not-before time (a CASE over time zones, see local_hours.py)
    sql = _INSERT_PAGE_SQL.format(due=due)
    sql += _NOT_IN_EDITION_SEGMENT if skip_edition_segment else ""
    sql += _NOT_RECEIVED if only_new else ""
    statement = text(sql + "ON CONFLICT DO NOTHING").bindparams(
        bindparam("now", type_=UTCDateTime()), bindparam("month_start", type_=UTCDateTime())
    )
    due_names = [name for name in re.findall(r":(due_\w+)", due)]
    if due_names:
        statement = statement.bindparams(*(bindparam(n, type_=UTCDateTime()) for n in due_names))
    return statement.bindparams(bindparam("received", expanding=True)) if only_new else statement


_INSERT_TEST = text(
    "INSERT INTO delivery (dedupe_key, kind, send_id, subscriber_id, email, email_domain, "
    "language, status, attempts, smtp_reply, message_id, created_at, updated_at) "
    "VALUES (:key, :kind, :send_id, NULL, :email, :domain, :language, :pending, 0, '', '', "
    ":now, :now) ON CONFLICT DO NOTHING"
).bindparams(bindparam("now", type_=UTCDateTime()))
_PENDING_WHERE = (
    "WHERE d.send_id = :send_id AND d.status = :pending AND d.id > :after "
    "AND (d.due_at IS NULL OR d.due_at <= :now) ORDER BY d.id LIMIT :limit"
)
_PENDING_COLUMNS = "d.id, d.subscriber_id, d.email, d.language, d.retries, d.queued_at"


def _pending_page(*, with_zones: bool) -> TextualSelect:
    """A page of due outbox rows. With quiet hours set, each row brings its reader's zone (a
    primary-key lookup, about 1 us per row on PostgreSQL): the relay's quiet gate and the
    worker keep the quiet hours with it. Without them the zone is not read."""
    if with_zones:
        sql = (
            f"SELECT {_PENDING_COLUMNS}, s.time_zone FROM delivery d "  # noqa: S608 - constants
            f"LEFT JOIN subscriber s ON s.id = d.subscriber_id {_PENDING_WHERE}"
        )
    else:
        sql = f"SELECT {_PENDING_COLUMNS}, NULL AS time_zone FROM delivery d {_PENDING_WHERE}"  # noqa: S608
    # SQLite hands timestamps of a textual query back as text: say what the column is.
    return (
        text(sql)
        .bindparams(bindparam("now", type_=UTCDateTime()))
        .columns(
            column("id"),
            column("subscriber_id"),
            column("email"),
            column("language"),
            column("retries"),
            column("queued_at", UTCDateTime()),
            column("time_zone"),
        )
    )


_PENDING_PAGES = {zones: _pending_page(with_zones=zones) for zones in (True, False)}
# Marked before the publish: a job the workers give back at once (an open breaker, a paused
# send) finds its row queued and parks it, where marking after the confirm would overwrite
# the parked row with "queued" and leave it without a job. Of two relays, the one whose
# UPDATE takes a row publishes it.
_MARK_QUEUED = text(
    "UPDATE delivery SET status = :queued, queued_at = COALESCE(queued_at, :now), "
    "due_at = :deadline, updated_at = :now "
    "WHERE id IN :ids AND status = :pending AND (due_at IS NULL OR due_at <= :now) RETURNING id"
).bindparams(
    bindparam("ids", expanding=True),
    bindparam("now", type_=UTCDateTime()),
    bindparam("deadline", type_=UTCDateTime()),
)
# The broker did not take the batch: back to the outbox, unless a worker got a job already.
_UNMARK_QUEUED = text(
    "UPDATE delivery SET status = :pending, due_at = NULL, updated_at = :now "
    "WHERE id IN :ids AND status = :queued AND due_at = :deadline"
).bindparams(
    bindparam("ids", expanding=True),
    bindparam("now", type_=UTCDateTime()),
    bindparam("deadline", type_=UTCDateTime()),
)
_COUNT = text("SELECT COUNT(*) FROM delivery WHERE send_id = :send_id")
_FINISH_PLANNING = text(
    "UPDATE send SET total = :total, planned_at = COALESCE(planned_at, :now), "
    "status = CASE WHEN status = :planning THEN :running ELSE status END "
    "WHERE id = :send_id RETURNING status"
).bindparams(bindparam("now", type_=UTCDateTime()))


@dataclass
class Planner:
    settings: DispatcherSettings
    engine: AsyncEngine
    sessions: Sessions
    publisher: Publisher
    raw_channel: object
    metrics: DispatcherMetrics
    clock: Clock = SYSTEM_CLOCK

    async def handle(self, message: AbstractIncomingMessage) -> None:
        try:
            job = decode(PlanSend, message.body)
        except UndecodableMessage as err:
            log.warning("poison_job_dead_lettered", reason=str(err)[:300])
            await dead_letter(
                channel=self.raw_channel,  # type: ignore[arg-type]
                message=message,
                reason=str(err),
            )
            await message.ack()
            return
        with structlog.contextvars.bound_contextvars(send_id=job.send_id, issue=job.issue_key):
            await self.plan(job)
        await message.ack()

    async def plan(self, job: PlanSend) -> None:
        """Plan (or resume planning) one send; returns when every row is written and relayed
        (or left in the outbox, if the broker refused it)."""
        send = await self._open_send(job)
        status = send.status
        if status == SendStatus.SCHEDULED:  # planned when due (services/dispatcher/scheduler.py)
            status = await scheduler.start_if_due(
                self.sessions, send_id=job.send_id, now=self.clock.now()
            )
            if status == SendStatus.SCHEDULED:
                log.info("send_scheduled", at=str(send.scheduled_at))
                return
            send = await self._open_send(job)
        if status in {SendStatus.CANCELLED, SendStatus.DONE}:
            log.info("plan_skipped", status=status)
            return
        if job.test_to:
            await self._write_test_rows(job, job.test_to)
        else:
            for language in job.segments:
                await self._write_segment(job, language, send)
                if await self._cancelled(job.send_id):
                    log.info("plan_cancelled")
                    return
        await self._relay_while_planning(job.send_id)
        await self._finish_planning(job.send_id)

    async def _open_send(self, job: PlanSend) -> Send:
        async with self.sessions() as session:
            send = await session.get(Send, job.send_id)
            if send is None:
                now = self.clock.now()
                schedule = job.schedule
                later = schedule is not None and schedule.start_at is not None
                later = later and schedule.start_at > now  # type: ignore[union-attr,operator]
                send = Send(
                    id=job.send_id,
                    issue_key=job.issue_key,
                    languages=",".join(job.segments),
                    fallbacks=",".join(f"{k}={v}" for k, v in sorted(job.fallbacks.items())),
                    status=SendStatus.SCHEDULED if later else SendStatus.PLANNING,
                    test_to=job.test_to,
                    intent=SendIntent.TEST if job.test_to else job.intent,
                    created_at=now,
                    **scheduler.schedule_columns(schedule, now=now, later=later),
                )
                session.add(send)
                await session.commit()
                log.info(
                    "send_planning",
                    segments=job.segments,
                    test=bool(job.test_to),
                    intent=send.intent,
                    scheduled_at=str(send.scheduled_at) if later else None,
                )
            return send

    async def _cancelled(self, send_id: str) -> bool:
        async with self.sessions() as session:
            send = await session.get(Send, send_id)
            return send is None or send.status == SendStatus.CANCELLED

    async def _write_test_rows(self, job: PlanSend, address: str) -> None:
        async with self.sessions() as session:
            for language in job.segments:
                await session.execute(
                    _INSERT_TEST,
                    {
                        "key": f"send:{job.send_id}:test:{language}",
                        "kind": str(DeliveryKind.TEST),
                        "send_id": job.send_id,
                        "email": address,
                        "domain": address_domain(address),
                        "language": language,
                        "pending": str(DeliveryStatus.PENDING),
                        "now": self.clock.now(),
                    },
                )
            await session.commit()

    async def _write_segment(self, job: PlanSend, language: str, send: Send) -> None:
        after = 0
        batch = self.settings.dispatch_planner_batch
        edition_language = job.fallbacks.get(language, language)
        skip_edition_segment = edition_language != language and edition_language in job.segments
        only_new = job.intent == "only_new"
        due, extra = await local_hours.due_clause(
            self.sessions,
            settings=self.settings,
            send=send,
            language=language,
            dialect=self.engine.dialect.name,
        )
        insert = audience_insert(
            skip_edition_segment=skip_edition_segment, only_new=only_new, due=due
        )
        extra["month_start"] = cadence.month_start(send.started_at or self.clock.now())
        if skip_edition_segment:
            extra["edition_language"] = edition_language
        if only_new:
            extra["issue_key"] = job.issue_key
            extra["received"] = sorted(str(s) for s in RECEIVED_STATUSES)
        while True:
            async with self.sessions() as session:
                ids = list(
                    (
                        await session.execute(
                            _AUDIENCE_PAGE, {"language": language, "after": after, "limit": batch}
                        )
                    ).scalars()
                )
                if not ids:
                    return
                last = int(ids[-1])
                await write_audience_page(
                    session,
                    insert,
                    {
                        "send_id": job.send_id,
                        "kind": str(DeliveryKind.ISSUE),
                        "language": language,
                        "pending": str(DeliveryStatus.PENDING),
                        "now": self.clock.now(),
                        "after": after,
                        "last": last,
                        **extra,
                    },
                    issue_key=job.issue_key,
                )
                await session.commit()
            after = last
            # Publish as we go, so that workers start while the rest is still being planned.
            await self._relay_while_planning(job.send_id)

    async def _relay_while_planning(self, send_id: str) -> None:
        """Relay what is pending; a broker that does not take the jobs does not stop the
        planning. The batch it refused is back in the outbox (``pending``): the next page's
        relay, the outbox sweeper or the reconciler publishes it once the send runs. Failing
        the ``PlanSend`` instead would have it redelivered until its delivery limit dead-letters
        it, with the rest of the audience never written."""
        try:
            await self.relay(send_id)
        except PublishError as err:
            self.metrics.planning_recoveries.labels("relay_failed").inc()
            log.warning("planning_relay_failed", error=str(err)[:300])

    async def relay(self, send_id: str) -> int:
        """Publish every pending row of the send that is due, batch by batch, and mark it
        queued; returns how many jobs were published."""
        after = 0
        published = 0
        batch = self.settings.dispatch_planner_batch
        while True:
            now = self.clock.now()
            async with self.sessions() as session:
                rows = (
                    await session.execute(
                        _PENDING_PAGES[self.settings.quiet_window is not None],
                        {
                            "send_id": send_id,
                            "pending": str(DeliveryStatus.PENDING),
                            "after": after,
                            "limit": batch,
                            "now": now,
                        },
                    )
                ).all()
            if not rows:
                return published
            after = int(rows[-1][0])
            rows = await self._quiet().admit(rows)  # readers in their quiet hours wait
            if not rows:
                continue
            async with self.sessions() as session:
                # A new sending domain's daily caps, reserved in the transaction that marks
                # the rows queued: what another relay marked first is given back at once.
                rows, reserved = await self._warmup.reserve(session, rows, now=now)
                marks = {
                    "ids": ledger.padded([int(row[0]) for row in rows]),
                    "queued": str(DeliveryStatus.QUEUED),
                    "pending": str(DeliveryStatus.PENDING),
                    "now": now,
                    # One deadline from the mark on: a write per row at the confirm as well
                    # (a fifth version of every row) cost more than a faster re-drive of a
                    # batch whose planner died between the mark and its confirms is worth.
                    "deadline": now + timedelta(seconds=self.settings.dispatch_queued_deadline_s),
                }
                taken = (
                    set((await session.execute(_MARK_QUEUED, marks)).scalars()) if rows else set()
                )
                await reserved.give_back(
                    session, (int(row[0]) for row in rows if int(row[0]) not in taken)
                )
                await session.commit()
            if not rows:
                continue
            jobs = [
                (
                    DeliverIssue(
                        delivery_id=int(row[0]),
                        send_id=send_id,
                        subscriber_id=row[1],
                        to=str(row[2]),
                        language=row[3],
                        first_attempt_at=row[5] or now,  # the retry window runs from the first
                        time_zone=row[6],
                    ),
                    int(row[4] or 0),
                )
                for row in rows
                if int(row[0]) in taken
            ]
            try:
                await self._publish(jobs)
            except PublishError:
                async with self.sessions() as session:
                    await session.execute(_UNMARK_QUEUED, marks)
                    await session.commit()
                raise
            self.metrics.confirms.inc(len(jobs))
            # a retry was counted when first planned; a test send's jobs are not planned mail
            planned = Counter(
                job.language
                for job, retries in jobs
                if not retries and job.subscriber_id is not None
            )
            for language, count in planned.items():  # one labels() per edition, not per job
                self.metrics.planned.labels(language).inc(count)
            published += len(jobs)
            log.debug("jobs_queued", count=len(jobs))

    def _quiet(self) -> local_hours.QuietGate:
        return local_hours.QuietGate(
            sessions=self.sessions, settings=self.settings, clock=self.clock
        )

    @property
    def _warmup(self) -> warmup.WarmupGate:
        return warmup.WarmupGate(settings=self.settings)

    async def _publish(self, jobs: list[tuple[DeliverIssue, int]]) -> None:
        """First attempts pipelined in one batch; retries each with its ``x-retry`` header."""
        first = [job for job, retries in jobs if not retries]
        if first:
            await self.publisher.publish_many(first, routing_key=DELIVER_ISSUE)
        retried = [(job, retries) for job, retries in jobs if retries]
        if retried:
            outcomes = await asyncio.gather(
                *(
                    self.publisher.publish(
                        job, routing_key=DELIVER_ISSUE, headers={RETRY_HEADER: retries}
                    )
                    for job, retries in retried
                ),
                return_exceptions=True,
            )
            failures = [o for o in outcomes if isinstance(o, BaseException)]
            if failures:
                raise failures[0]

    async def _finish_planning(self, send_id: str) -> None:
        # One conditional UPDATE, not a read then a write: a cancel (or pause) that lands
        # while planning ends must not be overwritten with "running".
        async with self.sessions() as session:
            total = int((await session.execute(_COUNT, {"send_id": send_id})).scalar_one())
            status = (
                await session.execute(
                    _FINISH_PLANNING,
                    {
                        "send_id": send_id,
                        "total": total,
                        "now": self.clock.now(),
                        "planning": str(SendStatus.PLANNING),
                        "running": str(SendStatus.RUNNING),
                    },
                )
            ).scalar_one_or_none()
            await session.commit()
            if status is None:
                return
            log.info("send_planned", total=total, status=status)
        await ledger.finish_if_complete(self.engine, send_id=send_id)
