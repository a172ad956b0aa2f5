"""The reconciler: the ledger decides what is still to be done, the broker only carries jobs.

Every open delivery has a deadline in the ledger (migration 0007): a ``deferred`` row its next
attempt (``due_at``), a ``queued`` row the time by which its job should have been consumed
(``due_at``, set by the relay), a ``sending`` row the end of its claimer's lease
(``lease_until``). Each pass, beside the planner (every ``dispatch_reconcile_s``, sooner when a
retry falls due before that):

1. deferred rows whose next attempt is due go back to the outbox (``pending``);
2. queued rows past their deadline plus ``dispatch_reconcile_grace_s`` are taken as lost (a
   purged queue, a message gone with its node) and go back to the outbox, counted in
   ``redriven``;
3. sending rows whose claiming process has stopped beating (killed: see
   :mod:`services.dispatcher.heartbeat`), or whose lease ended more than the grace ago (the
   worker lost the job and never wrote an outcome), go back to the outbox, counted in
   ``redriven``: the server may have taken that mail already, the in-flight window of a
   killed process;

4. sends stuck in ``planning`` (their ``PlanSend`` purged or dead-lettered: nothing else
   resumes them) whose planning has made no progress for ``dispatch_planning_stale_s`` (no
   delivery row of the send created since, nor the send created, started or re-driven) get
   their ``PlanSend`` published again, built from the send row (``scheduler.plan_command``),
   counted in ``newsletter_planning_recoveries_total{event="replanned"}``: a re-plan skips
   the rows already written and the relay publishes each pending row once. A ``scheduled``
   send is not stuck: the scheduler starts it when due;

then the planner's relay publishes the outbox rows of those sends (confirms first, then
``queued`` with a new deadline), except rows whose reader is in their quiet hours: those stay
``pending`` until the quiet hours end (the relay's quiet gate, :mod:`.local_hours`), so a
re-drive at 23:30 local mails nobody before 07:00. Deferrals and queued deadlines are read on
the dispatcher's clock (the one the planner and the workers write them with), leases and
heartbeats on the wall clock. A relay that fails (the broker cannot take the jobs) leaves
them ``pending``: the next pass tries again, and the receiving server sees nothing meanwhile.
Running sends with nothing open left are marked done. A send therefore finishes whatever
happened to the queues.

A long backlog is not a loss: while ``dispatcher.deliveries`` holds at least as many jobs
(ready, plus what its consumers may hold unacked) as there are queued rows, no queued row is
re-driven (a duplicate job would be harmless, the claim skips it, but a slow send would
double its queue at every deadline). An empty queue with queued rows past their deadline
always means lost jobs.

Several dispatchers may reconcile at once: rows are taken by conditional ``UPDATE``s (the
status and the deadline are checked again), on PostgreSQL through a ``FOR UPDATE SKIP LOCKED``
selection, so each row is re-driven by one of them. A stuck send is taken the same way, by
setting its ``start_requested_at`` (the time its ``PlanSend`` was last published): the
dispatcher that sets it publishes, and the send is not stale again before another
``dispatch_planning_stale_s``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog
from sqlalchemy import TextClause, bindparam, column, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.dispatcher import ledger, scheduler
from services.dispatcher.metrics import DispatcherMetrics
from services.dispatcher.planner import Planner
from shared.db.tables.deliveries import DeliveryStatus, Send, SendStatus
from shared.db.tables.timestamps import UTCDateTime, utcnow
from shared.messaging.publisher import PublishError
from shared.messaging.topology import PLAN_SEND
from shared.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

# Ready jobs in the work queue and how many more its consumers may hold (unacked), or None
QueueDepth = Callable[[], Awaitable[tuple[int, int] | None]]
_MAX_ROUNDS = 100  # statements per category and pass (each takes up to the batch size)
_FAR_FUTURE = timedelta(days=365 * 100)

_RUNNING_SENDS = text("SELECT id FROM send WHERE status = :running")
_NEXT_RETRY = text(
    "SELECT MIN(due_at) FROM delivery WHERE status = :deferred "
    "AND send_id IN (SELECT id FROM send WHERE status = :running)"
).columns(column("next_at", UTCDateTime()))
_MIN_PAUSE_S = 0.2
_QUEUED_TOTAL = text(
    "SELECT COUNT(*) FROM delivery WHERE status = :queued "
    "AND send_id IN (SELECT id FROM send WHERE status = :running)"
)


# Which rows of a status are taken, with ``{t}`` the table's name or alias.
_DUE = "{t}.due_at < :cutoff"
_LEASE_GONE = (
    "({t}.lease_until < :cutoff OR ({t}.claimed_by IS NOT NULL AND NOT EXISTS ("
    "SELECT 1 FROM dispatcher_process p WHERE p.id = {t}.claimed_by "
    "AND p.seen_at >= :alive_after)))"
)


# A send in planning that has shown no sign of life since ``:cutoff``.
_PLANNING_STALLED = (
    "{t}.status = :planning AND {t}.created_at < :cutoff "
    "AND ({t}.started_at IS NULL OR {t}.started_at < :cutoff) "
    "AND ({t}.start_requested_at IS NULL OR {t}.start_requested_at < :cutoff) "
    "AND NOT EXISTS (SELECT 1 FROM delivery d WHERE d.send_id = {t}.id "
    "AND d.created_at >= :cutoff)"
)


def _replan_statement(*, one_send: bool, skip_locked: bool) -> TextClause:
    """Take stalled planning sends (``start_requested_at`` = now); returns their ids. As in
    :func:`_take_statement`, the outer ``WHERE`` checks again."""
    sends = "s.id = :send_id AND " if one_send else ""
    lock = " FOR UPDATE OF s SKIP LOCKED" if skip_locked else ""
    # The conditions and the clauses are constants of this module, never input.
    sql = (
        "UPDATE send SET start_requested_at = :now WHERE id IN ("  # noqa: S608
        f"SELECT s.id FROM send s WHERE {sends}{_PLANNING_STALLED.format(t='s')} "
        f"ORDER BY s.created_at LIMIT :limit{lock}) "
        f"AND {_PLANNING_STALLED.format(t='send')} RETURNING id"
    )
    return text(sql).bindparams(
        bindparam("now", type_=UTCDateTime()), bindparam("cutoff", type_=UTCDateTime())
    )


def _take_statement(condition: str, order: str, *, one_send: bool, skip_locked: bool) -> TextClause:
    """``UPDATE`` rows of status ``:status`` meeting ``condition`` back to the outbox; returns
    their ids and send ids. The condition is repeated in the outer ``WHERE``, so a row another
    dispatcher changed meanwhile is left alone."""
    sends = "d.send_id = :send_id AND " if one_send else ""
    lock = " FOR UPDATE SKIP LOCKED" if skip_locked else ""
    inner = condition.format(t="d")
    outer = condition.format(t="delivery")
    # The conditions and the clauses are constants of this module, never input.
    sql = (
        "UPDATE delivery SET status = :pending, due_at = NULL, lease_until = NULL, "  # noqa: S608
        f"claimed_by = NULL, redriven = redriven + :count, updated_at = :now WHERE id IN ("
        f"SELECT d.id FROM delivery d WHERE {sends}d.status = :status AND {inner} "
        "AND d.send_id IN (SELECT s.id FROM send s WHERE s.status = :running) "
        f"ORDER BY d.{order} LIMIT :limit{lock}) "
        f"AND status = :status AND {outer} RETURNING id, send_id"
    )
    typed = [bindparam("now", type_=UTCDateTime()), bindparam("cutoff", type_=UTCDateTime())]
    if ":alive_after" in sql:
        typed.append(bindparam("alive_after", type_=UTCDateTime()))
    return text(sql).bindparams(*typed)


@dataclass
class ReconcileReport:
    """What one pass did; counts per category."""

    due_retries: int = 0  # deferred rows due again (normal retries)
    lost_queued: int = 0  # queued rows whose job was gone: re-driven
    expired_leases: int = 0  # sending rows whose claimer is gone or lease ended: re-driven
    published: int = 0  # jobs the relay published for these sends
    finished: int = 0  # running sends found with nothing open, marked done
    queue_depth: int | None = None  # ready jobs in dispatcher.deliveries, if known
    relay_failed: int = 0  # sends whose jobs the broker did not take (left pending)
    backlog_kept: bool = False  # queued rows past deadline left alone: the queue holds them
    replanned: int = 0  # sends stuck in planning whose PlanSend was published again
    sends: Counter[str] = field(default_factory=Counter)  # rows moved back, by send

    @property
    def redriven(self) -> int:
        return self.lost_queued + self.expired_leases


class Reconciler:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        planner: Planner,
        metrics: DispatcherMetrics | None = None,
        queue_depth: QueueDepth | None = None,
        clock: Callable[[], datetime] = utcnow,
        schedule_clock: Callable[[], datetime] | None = None,
    ) -> None:
        settings = planner.settings
        self._engine = engine
        self._planner = planner
        self._metrics = metrics
        self._queue_depth = queue_depth
        self._clock = clock
        # The deadlines the planner's side writes (a deferral's next attempt, a queued job's
        # deadline) are on the dispatcher's clock; leases and heartbeats on ``clock``.
        self._schedule_clock = schedule_clock or clock
        self._interval = settings.dispatch_reconcile_s
        self._grace = timedelta(seconds=settings.dispatch_reconcile_grace_s)
        self._batch = settings.dispatch_reconcile_batch
        self._owner_stale = timedelta(seconds=settings.dispatch_owner_stale_s)
        self._planning_stale = timedelta(seconds=settings.dispatch_planning_stale_s)
        self._skip_locked = engine.dialect.name == "postgresql"
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def reconcile(
        self, *, send_id: str | None = None, force: bool = False
    ) -> ReconcileReport:
        """One pass over every running send (or one). ``force`` takes every queued row as
        lost now, whatever its deadline and the queue's depth (an operator who knows the jobs
        are gone); a deferral still waits for its time, and a live lease is respected."""
        now = self._clock()
        today = self._schedule_clock()
        report = ReconcileReport()
        report.due_retries = await self._take(
            _DUE,
            "due_at",
            DeliveryStatus.DEFERRED,
            cutoff=today,
            send_id=send_id,
            report=report,
            count=False,
        )
        if force or await self._queue_may_have_lost_jobs(report):
            lost_cutoff = today + _FAR_FUTURE if force else today - self._grace
            report.lost_queued = await self._take(
                _DUE,
                "due_at",
                DeliveryStatus.QUEUED,
                cutoff=lost_cutoff,
                send_id=send_id,
                report=report,
                count=True,
            )
        report.expired_leases = await self._take(
            _LEASE_GONE,
            "lease_until",
            DeliveryStatus.SENDING,
            cutoff=now - self._grace,
            send_id=send_id,
            report=report,
            count=True,
        )
        if self._metrics is not None:
            self._metrics.redriven.labels("lost_job").inc(report.lost_queued)
            self._metrics.redriven.labels("lease_expired").inc(report.expired_leases)
        for moved_send in sorted(report.sends):
            with structlog.contextvars.bound_contextvars(send_id=moved_send):
                try:
                    report.published += await self._planner.relay(moved_send)
                except PublishError as err:
                    # Parked in the outbox: the next pass (or the sweeper) publishes them.
                    report.relay_failed += 1
                    log.warning("outbox_relay_failed", error=str(err)[:300])
        report.finished = await self._finish_idle_sends(send_id)
        planning_cutoff = now + _FAR_FUTURE if force else now - self._planning_stale
        report.replanned = await self._replan_stalled(send_id, cutoff=planning_cutoff)
        if self._metrics is not None:
            self._metrics.reconcile_passes.inc()
        if report.sends or report.finished or report.replanned:
            log.info(
                "ledger_reconciled",
                due_retries=report.due_retries,
                lost_queued=report.lost_queued,
                expired_leases=report.expired_leases,
                published=report.published,
                finished=report.finished,
                replanned=report.replanned,
            )
        return report

    async def _replan_stalled(self, send_id: str | None, *, cutoff: datetime) -> int:
        """Publish again the ``PlanSend`` of each send stuck in planning since ``cutoff``."""
        statement = _replan_statement(one_send=send_id is not None, skip_locked=self._skip_locked)
        params: dict[str, object] = {
            "planning": str(SendStatus.PLANNING),
            "cutoff": cutoff,
            "now": self._clock(),
            "limit": self._batch,
        }
        if send_id is not None:
            params["send_id"] = send_id
        async with self._engine.begin() as connection:
            taken = [str(row[0]) for row in await connection.execute(statement, params)]
        replanned = 0
        for ident in taken:
            async with self._planner.sessions() as session:
                send = await session.get(Send, ident)
            if send is None:
                continue
            command = scheduler.plan_command(send).model_copy(
                update={"message_id": f"replan-{uuid.uuid4().hex}"}
            )
            try:
                await self._planner.publisher.publish(command, routing_key=PLAN_SEND)
            except PublishError as err:  # taken again once stale again
                log.warning("planning_redrive_unpublished", send_id=ident, error=str(err)[:300])
                continue
            log.warning("planning_redriven", send_id=ident, reason="no planning progress")
            replanned += 1
        if self._metrics is not None:
            self._metrics.planning_recoveries.labels("replanned").inc(replanned)
        return replanned

    async def _queue_may_have_lost_jobs(self, report: ReconcileReport) -> bool:
        """False while the work queue may hold a job for every queued row."""
        if self._queue_depth is None:
            return True
        found = await self._queue_depth()
        if found is None:
            return False  # the broker cannot say (nor take a job): try again next pass
        depth, unacked = found
        report.queue_depth = depth
        async with self._engine.connect() as connection:
            queued = int(
                (
                    await connection.execute(
                        _QUEUED_TOTAL,
                        {"queued": str(DeliveryStatus.QUEUED), "running": str(SendStatus.RUNNING)},
                    )
                ).scalar_one()
            )
        lost = queued > 0 and (depth == 0 or depth + unacked < queued)
        report.backlog_kept = queued > 0 and not lost
        return lost

    async def _take(
        self,
        condition: str,
        order: str,
        status: DeliveryStatus,
        *,
        cutoff: datetime,
        send_id: str | None,
        report: ReconcileReport,
        count: bool,
    ) -> int:
        statement = _take_statement(
            condition, order, one_send=send_id is not None, skip_locked=self._skip_locked
        )
        params: dict[str, object] = {
            "pending": str(DeliveryStatus.PENDING),
            "status": str(status),
            "running": str(SendStatus.RUNNING),
            "cutoff": cutoff,
            "count": 1 if count else 0,
            "limit": self._batch,
            "alive_after": self._clock() - self._owner_stale,
        }
        if send_id is not None:
            params["send_id"] = send_id
        taken = 0
        for _ in range(_MAX_ROUNDS):
            params["now"] = self._clock()
            async with self._engine.begin() as connection:
                rows = [(int(r[0]), str(r[1])) for r in await connection.execute(statement, params)]
            report.sends.update(send for _, send in rows)
            taken += len(rows)
            if status == DeliveryStatus.SENDING:
                for delivery_id, send in rows:  # one line each, as a worker's re-claim logs
                    log.warning(
                        "possible_duplicate_resend",
                        reason="claimer gone or lease expired",
                        delivery_id=delivery_id,
                        send_id=send,
                    )
            if len(rows) < self._batch:
                break
        return taken

    async def _finish_idle_sends(self, send_id: str | None) -> int:
        """A running send whose last outcome's completion check was lost still ends."""
        if send_id is not None:
            ids = [send_id]
        else:
            async with self._engine.connect() as connection:
                rows = await connection.execute(
                    _RUNNING_SENDS, {"running": str(SendStatus.RUNNING)}
                )
                ids = [str(row[0]) for row in rows]
        finished = 0
        for ident in ids:
            if await ledger.finish_if_complete(self._engine, send_id=ident):
                finished += 1
        return finished

    async def _loop(self) -> None:
        while True:
            try:
                await self.reconcile()
            except Exception as err:  # the database is away, say: the next pass tries again
                log.warning("reconcile_failed", error=str(err)[:300])
            await asyncio.sleep(await self._pause())

    async def _pause(self) -> float:
        """Until the next pass: the interval, or sooner when a retry falls due before it (a
        short tier's retry is not held back by the interval)."""
        try:
            async with self._engine.connect() as connection:
                next_at = (
                    await connection.execute(
                        _NEXT_RETRY,
                        {
                            "deferred": str(DeliveryStatus.DEFERRED),
                            "running": str(SendStatus.RUNNING),
                        },
                    )
                ).scalar_one_or_none()
        except Exception as err:
            log.warning("next_retry_unknown", error=str(err)[:200])
            return self._interval
        if not isinstance(next_at, datetime):
            return self._interval
        until = (next_at - self._schedule_clock()).total_seconds()
        return min(self._interval, max(_MIN_PAUSE_S, until))
