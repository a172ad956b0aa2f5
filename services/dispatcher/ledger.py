"""The delivery ledger: claims before SMTP, outcomes after it, in batched transactions.

A worker *claims* a delivery (``queued``/``deferred`` -> ``sending``) before its SMTP
transaction and holds it under a *lease* (``lease_until``): of two copies of the same job, only
one can claim, so a duplicate job is skipped instead of mailed. A redelivered job (its first
consumer died or lost its channel) may re-claim a delivery left in ``sending`` only once the
lease has run out; while it runs, the claimer may still be writing its outcome (a database
hiccup after the 250), and the redelivered copy is skipped: the reconciler re-drives the row if
the lease ends with no outcome. Outcomes are committed before the queue message is acked; a
deferral is a ``deferred`` row with its next attempt in ``due_at``, published again by the
reconciler when due (no delay queue holds it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from services.dispatcher import cadence
from shared.db.tables.deliveries import DeliveryStatus, SendStatus
from shared.db.tables.timestamps import UTCDateTime, utcnow

log = structlog.get_logger(__name__)

_CLAIMABLE = (DeliveryStatus.PENDING, DeliveryStatus.QUEUED, DeliveryStatus.DEFERRED)
_OPEN = (*_CLAIMABLE, DeliveryStatus.SENDING)
DEFAULT_LEASE_S = 900.0
DEFAULT_OWNER_STALE_S = 30.0


@dataclass(frozen=True)
class ClaimRequest:
    delivery_id: int
    redelivered: bool
    replayed: bool = False  # an operator replayed it from the dead letters: failed may retry
    # This process claimed it before and no longer works on it (its handler failed and the
    # job came back): it may take its own claim again, whatever the lease.
    own_idle: bool = False


@dataclass(frozen=True)
class Claim:
    claimed: bool
    reclaimed: bool = False  # it was left in "sending" by a consumer that went away
    status: str = ""  # the status found when not claimed
    # Per-reader mode: the subscriber consents to per-reader analytics now (their tracked
    # links carry a signed reference to this delivery).
    reader_ref: bool = False
    reason: str = ""  # why this claim dropped it (unsubscribed, cadence), "" otherwise


@dataclass(frozen=True)
class Result:
    delivery_id: int
    send_id: str | None
    status: str
    smtp_code: int | None = None
    smtp_reply: str = ""
    message_id: str = ""
    # deferred: the next attempt; a give-back: not to be published before (an open breaker)
    due_at: datetime | None = None
    # False for a give-back by a job that never claimed (held by an open breaker): it may
    # change only a row nobody is sending, never a claimed one of another copy.
    claimed: bool = True


# Still wanted: the subscriber is active, still reads this edition and the address is not
# suppressed, as when the send was planned (a test send has no subscriber). Someone who
# unsubscribes, unticks the edition, bounces, complains or is erased while a send runs, or
# while their delivery waits in a retry tier, is not mailed (``unsubscribed``). Nor, for issue
# mail, is a reader whose cadence now leaves this issue out (paused, or monthly with this
# month's issue delivered; see :mod:`services.dispatcher.cadence`): ``cancelled``. Each such
# row keeps its reason in ``smtp_reply`` (``send status`` shows it). One statement per batch;
# the reasons' ``CASE`` runs only for the rows it drops.
_WANTED = (
    "s.status = 'active' AND EXISTS (SELECT 1 FROM subscriber_language sl "
    "WHERE sl.subscriber_id = s.id AND sl.language = delivery.language) "
    "AND NOT EXISTS (SELECT 1 FROM suppression p "
    "WHERE p.email_hash = s.email_hash AND p.lifted_at IS NULL)"
)
_HIS = "FROM subscriber s WHERE s.id = delivery.subscriber_id"
NOT_SUBSCRIBED = "not sent: the reader is no longer subscribed"
EDITION_DROPPED = "not sent: the reader no longer reads this edition"
SUPPRESSED = "not sent: the address is suppressed"
# The claim of a batch, one statement: each claimable row is either claimed (``sending``,
# leased) or, when nobody wants it any more, marked with its reason. ``w.keep`` is computed
# once per row (a materialized CTE); the reasons' ``CASE`` runs only for the rows it drops.
# (Two statements, a drop then a claim, read every row twice and cost the dispatcher one more
# round trip per batch.)
# The statement is built from constants of this package, never from input.
_KEEP = (
    "(delivery.subscriber_id IS NULL OR EXISTS (SELECT 1 "
    f"{_HIS} AND {_WANTED} AND (delivery.kind <> 'issue' OR NOT "
    f"({cadence.PAUSED_AT_CLAIM} OR {cadence.MONTHLY_AT_CLAIM}))))"
)
_CLAIM = text(
    # MATERIALIZED: inlined, the subquery's ``keep`` would be evaluated again in every CASE.
    f"WITH w AS MATERIALIZED (SELECT id, {_KEEP} AS keep FROM delivery "  # noqa: S608
    "WHERE id IN :ids AND status IN :claimable) "
    "UPDATE delivery SET status = CASE WHEN w.keep THEN :sending "
    f"WHEN EXISTS (SELECT 1 {_HIS} AND {_WANTED}) THEN :cancelled ELSE :unsubscribed END, "
    "attempts = CASE WHEN w.keep THEN delivery.attempts + 1 ELSE delivery.attempts END, "
    "lease_until = CASE WHEN w.keep THEN :lease ELSE delivery.lease_until END, "
    "claimed_by = CASE WHEN w.keep THEN :owner ELSE delivery.claimed_by END, "
    "due_at = CASE WHEN w.keep THEN NULL ELSE delivery.due_at END, "
    "smtp_reply = CASE WHEN w.keep THEN delivery.smtp_reply "
    f"WHEN NOT EXISTS (SELECT 1 {_HIS} AND s.status = 'active') THEN :not_subscribed "
    "WHEN NOT EXISTS (SELECT 1 FROM subscriber_language sl "
    "WHERE sl.subscriber_id = delivery.subscriber_id AND sl.language = delivery.language) "
    "THEN :edition_dropped "
    f"WHEN NOT EXISTS (SELECT 1 {_HIS} AND {_WANTED}) THEN :suppressed "
    f"WHEN EXISTS (SELECT 1 {_HIS} AND {cadence.PAUSED_AT_CLAIM}) THEN :paused "
    "ELSE :monthly END, updated_at = :now "
    "FROM w WHERE delivery.id = w.id AND delivery.status IN :claimable "
    "RETURNING delivery.id, delivery.send_id, delivery.status, delivery.smtp_reply"
).bindparams(
    bindparam("ids", expanding=True),
    bindparam("claimable", expanding=True),
    bindparam("now", type_=UTCDateTime()),
    bindparam("lease", type_=UTCDateTime()),
    bindparam("cadence_now", type_=UTCDateTime()),
    bindparam("month_start", type_=UTCDateTime()),
)
# Only a lease that has run out, or whose process has stopped beating (killed): a live
# claimer may still record its outcome.
_RECLAIM = text(
    "UPDATE delivery SET attempts = attempts + 1, lease_until = :lease, claimed_by = :owner, "
    "updated_at = :now WHERE id IN :ids AND status = :sending AND (lease_until IS NULL "
    "OR lease_until < :now OR (claimed_by IS NOT NULL AND NOT EXISTS (SELECT 1 FROM "
    "dispatcher_process p WHERE p.id = delivery.claimed_by AND p.seen_at >= :alive_after))) "
    "RETURNING id"
).bindparams(
    bindparam("ids", expanding=True),
    bindparam("now", type_=UTCDateTime()),
    bindparam("lease", type_=UTCDateTime()),
    bindparam("alive_after", type_=UTCDateTime()),
)
_RECLAIM_OWN = text(
    "UPDATE delivery SET attempts = attempts + 1, lease_until = :lease, updated_at = :now "
    "WHERE id IN :ids AND status = :sending AND claimed_by = :owner RETURNING id"
).bindparams(
    bindparam("ids", expanding=True),
    bindparam("now", type_=UTCDateTime()),
    bindparam("lease", type_=UTCDateTime()),
)
_REOPEN = text(
    "UPDATE delivery SET status = :sending, attempts = attempts + 1, lease_until = :lease, "
    "claimed_by = :owner, due_at = NULL, updated_at = :now "
    "WHERE id IN :ids AND status = :failed RETURNING id"
).bindparams(
    bindparam("ids", expanding=True),
    bindparam("now", type_=UTCDateTime()),
    bindparam("lease", type_=UTCDateTime()),
)
# Per-reader mode: which of the claimed deliveries are of readers whose per-reader analytics
# consent stands (confirmed, not withdrawn), read in the claim's transaction.
READER_ANALYTICS_FORM = "reader_analytics"
_CONSENTING = text(
    "SELECT d.id FROM delivery d WHERE d.id IN :ids AND d.subscriber_id IS NOT NULL "
    "AND EXISTS (SELECT 1 FROM consent_record c WHERE c.subscriber_id = d.subscriber_id "
    "AND c.form = :form AND c.confirmed_at IS NOT NULL AND c.withdrawn_at IS NULL)"
).bindparams(bindparam("ids", expanding=True))
_STATUS_OF = text("SELECT id, status FROM delivery WHERE id IN :ids").bindparams(
    bindparam("ids", expanding=True)
)
_RECORD = text(
    "UPDATE delivery SET status = :status, smtp_code = :smtp_code, smtp_reply = :smtp_reply, "
    "message_id = COALESCE(:message_id, message_id), sent_at = COALESCE(:sent_at, sent_at), "
    "due_at = :due_at, lease_until = NULL, retries = retries + :retry, "
    "updated_at = :now WHERE id = :id AND status <> 'sent'"
).bindparams(
    bindparam("now", type_=UTCDateTime()),
    bindparam("sent_at", type_=UTCDateTime()),
    bindparam("due_at", type_=UTCDateTime()),
)
# The same write for a whole batch on PostgreSQL, in one statement: one plan and one execution
# per batch instead of one per row (the engine plans every execution afresh, see
# shared/db/engine.py), the values travelling as arrays. Used when no delivery appears twice in
# the batch (the per-row statement applies duplicates in turn).
_RECORD_MANY = text(
    "UPDATE delivery SET status = v.status, smtp_code = v.smtp_code, "
    "smtp_reply = v.smtp_reply, message_id = COALESCE(v.message_id, delivery.message_id), "
    "sent_at = COALESCE(v.sent_at, delivery.sent_at), due_at = v.due_at, lease_until = NULL, "
    "retries = delivery.retries + v.retry, updated_at = :now "
    "FROM unnest(CAST(:ids AS INTEGER[]), CAST(:statuses AS VARCHAR[]), "
    "CAST(:codes AS INTEGER[]), CAST(:replies AS TEXT[]), CAST(:message_ids AS VARCHAR[]), "
    "CAST(:sent_ats AS TIMESTAMPTZ[]), CAST(:due_ats AS TIMESTAMPTZ[]), "
    "CAST(:retries AS INTEGER[])) "
    "AS v(id, status, smtp_code, smtp_reply, message_id, sent_at, due_at, retry) "
    "WHERE delivery.id = v.id AND delivery.status <> 'sent'"
).bindparams(bindparam("now", type_=UTCDateTime()))
# A job that gives its delivery back (to the queue, to the outbox while its send is paused or
# its domain's breaker is open) or finds its send cancelled changes only an open row: a
# duplicate job of a delivery that has bounced or failed must not reopen it. A job that never
# claimed changes only a row nobody is sending.
_GIVE_BACK = text(
    "UPDATE delivery SET status = :status, due_at = :due_at, lease_until = NULL, "
    "updated_at = :now WHERE id = :id AND status IN ('pending', 'queued', 'deferred', 'sending')"
).bindparams(bindparam("now", type_=UTCDateTime()), bindparam("due_at", type_=UTCDateTime()))
_GIVE_BACK_UNCLAIMED = text(
    "UPDATE delivery SET status = :status, due_at = :due_at, updated_at = :now "
    "WHERE id = :id AND status IN ('pending', 'queued', 'deferred')"
).bindparams(bindparam("now", type_=UTCDateTime()), bindparam("due_at", type_=UTCDateTime()))
_GIVE_BACK_STATUSES = frozenset(
    {DeliveryStatus.PENDING, DeliveryStatus.QUEUED, DeliveryStatus.CANCELLED}
)
_ANY_OPEN = text("SELECT 1 FROM delivery WHERE send_id = :send_id AND status IN :open LIMIT 1")
_FINISH = text(
    "UPDATE send SET status = :done, finished_at = :now WHERE id = :send_id AND status = :running"
).bindparams(bindparam("now", type_=UTCDateTime()))


def padded(ids: Sequence[int]) -> list[int]:
    """The ids with the last one repeated up to the next power of two (at least 8).

    Each length of an ``IN (...)`` list is another statement for the driver to prepare and
    cache (asyncpg keeps 100 per connection) and for PostgreSQL to plan; batches of any size
    from 1 to 500 would fill those caches with hundreds of variants. A repeated id changes
    nothing in ``id IN (...)``.
    """
    items = list(ids)
    if not items:
        return items
    size = max(8, 1 << (len(items) - 1).bit_length())
    return items + [items[-1]] * (size - len(items))


async def take_over(
    session: AsyncConnection | AsyncSession,
    ids: Sequence[int],
    *,
    own_idle: Collection[int] = (),
    owner: str | None,
    now: datetime,
    lease_s: float,
    owner_stale_s: float,
) -> set[int]:
    """The lease rule, for issue and transactional mail alike: which ``sending`` rows among
    ``ids`` (of redelivered jobs) may be claimed again, for ``owner`` under a new lease.

    A row is taken over when its lease has run out or its claimer has not beaten for
    ``owner_stale_s`` (killed); a row in ``own_idle`` also when ``owner`` claimed it and no
    longer works on it (its handler failed and the job came back). While its live claimer's
    lease runs, the claimer may still be writing the outcome (a database hiccup after the
    250): the row is not taken, and the redelivered job is skipped.
    """
    if not ids:
        return set()
    lease = now + timedelta(seconds=lease_s)
    claimer = {"lease": lease, "owner": owner, "now": now, "sending": str(DeliveryStatus.SENDING)}
    taken = set(
        (
            await session.execute(
                _RECLAIM,
                {
                    "ids": padded(sorted(set(ids))),
                    "alive_after": now - timedelta(seconds=owner_stale_s),
                    **claimer,
                },
            )
        ).scalars()
    )
    own = sorted(i for i in set(ids) & set(own_idle) if i not in taken)
    if own and owner is not None:
        taken |= set(
            (await session.execute(_RECLAIM_OWN, {"ids": padded(own), **claimer})).scalars()
        )
    return taken


async def claim(
    engine: AsyncEngine,
    requests: Sequence[ClaimRequest],
    *,
    finisher: SendFinisher | None = None,
    lease_s: float = DEFAULT_LEASE_S,
    owner: str | None = None,
    owner_stale_s: float = DEFAULT_OWNER_STALE_S,
    reader_consent: bool = False,
    schedule_now: datetime | None = None,
) -> list[Claim]:
    """Claim a batch of deliveries in one transaction for process ``owner``, each leased for
    ``lease_s``; one :class:`Claim` per request. A redelivered job re-claims a ``sending`` row
    whose lease has ended or whose claimer has not beaten for ``owner_stale_s``.

    Deliveries nobody wants any more are marked ``unsubscribed`` on the way, issue deliveries
    the reader's cadence now leaves out ``cancelled`` (a pause, or this month's issue for a
    monthly reader, as of ``schedule_now``: the dispatcher's clock), each with its reason; a
    send whose last open delivery that was gets its completion check, as after :func:`record`.
    With ``reader_consent`` (per-reader mode) each claim also says whether its reader
    consents to per-reader analytics at this moment.
    """
    ids = sorted({r.delivery_id for r in requests})
    redelivered = sorted({r.delivery_id for r in requests if r.redelivered})
    now = utcnow()
    today = schedule_now or now
    lease = now + timedelta(seconds=lease_s)
    claimer = {"lease": lease, "owner": owner}
    async with engine.begin() as session:
        dropped: dict[int, tuple[str, str]] = {}
        dropped_sends: set[str] = set()
        claimed: set[int] = set()
        for ident, send_id, status, reason in await session.execute(
            _CLAIM,
            {
                "ids": padded(ids),
                "claimable": [str(s) for s in _CLAIMABLE],
                "sending": str(DeliveryStatus.SENDING),
                "unsubscribed": str(DeliveryStatus.UNSUBSCRIBED),
                "cancelled": str(DeliveryStatus.CANCELLED),
                "not_subscribed": NOT_SUBSCRIBED,
                "edition_dropped": EDITION_DROPPED,
                "suppressed": SUPPRESSED,
                "paused": cadence.PAUSED_REASON,
                "monthly": cadence.MONTHLY_REASON,
                "now": now,
                "cadence_now": today,
                "month_start": cadence.month_start(today),
                **claimer,
            },
        ):
            if status == DeliveryStatus.SENDING:
                claimed.add(int(ident))
                continue
            dropped[int(ident)] = (str(status), str(reason))
            if send_id is not None:
                dropped_sends.add(str(send_id))
        own = {r.delivery_id for r in requests if r.redelivered and r.own_idle}
        reclaimed = await take_over(
            session,
            [i for i in redelivered if i not in claimed],
            own_idle=own,
            owner=owner,
            now=now,
            lease_s=lease_s,
            owner_stale_s=owner_stale_s,
        )
        replayed = [r.delivery_id for r in requests if r.replayed and r.delivery_id not in claimed]
        if replayed:
            claimed |= set(
                (
                    await session.execute(
                        _REOPEN,
                        {
                            "ids": padded(sorted(set(replayed))),
                            "sending": str(DeliveryStatus.SENDING),
                            "failed": str(DeliveryStatus.FAILED),
                            "now": now,
                            **claimer,
                        },
                    )
                ).scalars()
            )
        consenting: set[int] = set()
        if reader_consent and (claimed or reclaimed):
            consenting = set(
                (
                    await session.execute(
                        _CONSENTING,
                        {"ids": padded(sorted(claimed | reclaimed)), "form": READER_ANALYTICS_FORM},
                    )
                ).scalars()
            )
        missing = [i for i in ids if i not in claimed and i not in reclaimed and i not in dropped]
        found: dict[int, str] = {}
        if missing:
            rows = await session.execute(_STATUS_OF, {"ids": padded(missing)})
            found = {int(row[0]): str(row[1]) for row in rows}
    await _check_finished(engine, dropped_sends, finisher)
    results: list[Claim] = []
    seen: set[int] = set()
    for request in requests:
        ident = request.delivery_id
        first = ident not in seen
        seen.add(ident)
        if first and ident in claimed:
            results.append(Claim(claimed=True, reader_ref=ident in consenting))
        elif first and ident in reclaimed:
            results.append(Claim(claimed=True, reclaimed=True, reader_ref=ident in consenting))
        elif first and ident in dropped:
            status, reason = dropped[ident]
            results.append(Claim(claimed=False, status=status, reason=reason))
        else:
            status = dropped[ident][0] if ident in dropped else found.get(ident, "")
            results.append(Claim(claimed=False, status=status or DeliveryStatus.SENDING))
    return results


async def record(
    engine: AsyncEngine, results: Sequence[Result], *, finisher: SendFinisher | None = None
) -> list[None]:
    """Commit a batch of outcomes, then finish the sends that have nothing open any more."""
    now = utcnow()
    # Rows are locked in id order, so two batches that share a row (a duplicate job) wait for
    # each other instead of deadlocking.
    results = sorted(results, key=lambda r: r.delivery_id)
    params = [
        {
            "id": r.delivery_id,
            "status": r.status,
            "smtp_code": r.smtp_code,
            "smtp_reply": r.smtp_reply[:2000],
            "message_id": r.message_id or None,
            "sent_at": now if r.status == DeliveryStatus.SENT else None,
            "due_at": (r.due_at or now) if r.status == DeliveryStatus.DEFERRED else None,
            "retry": 1 if r.status == DeliveryStatus.DEFERRED else 0,
            "now": now,
        }
        for r in results
        if r.status not in _GIVE_BACK_STATUSES
    ]
    given_back = [  # pauses, cancels, open breakers
        {"id": r.delivery_id, "status": r.status, "due_at": r.due_at or now, "now": now}
        for r in results
        if r.status in _GIVE_BACK_STATUSES and r.claimed
    ]
    held = [
        {"id": r.delivery_id, "status": r.status, "due_at": r.due_at or now, "now": now}
        for r in results
        if r.status in _GIVE_BACK_STATUSES and not r.claimed
    ]
    async with engine.begin() as connection:
        if params:
            await _record_outcomes(connection, params)
        if given_back:
            await connection.execute(_GIVE_BACK, given_back)
        if held:
            await connection.execute(_GIVE_BACK_UNCLAIMED, held)
    await _check_finished(engine, {r.send_id for r in results if r.send_id}, finisher)
    return [None] * len(results)


async def _record_outcomes(connection: AsyncConnection, params: list[dict[str, Any]]) -> None:
    """The outcome rows of a batch: one statement on PostgreSQL, one per row elsewhere."""
    if connection.dialect.name != "postgresql" or len({p["id"] for p in params}) < len(params):
        await connection.execute(_RECORD, params)
        return
    await connection.execute(
        _RECORD_MANY,
        {
            "ids": [p["id"] for p in params],
            "statuses": [str(p["status"]) for p in params],
            "codes": [p["smtp_code"] for p in params],
            "replies": [p["smtp_reply"] for p in params],
            "message_ids": [p["message_id"] for p in params],
            "sent_ats": [p["sent_at"] for p in params],
            "due_ats": [p["due_at"] for p in params],
            "retries": [p["retry"] for p in params],
            "now": params[0]["now"],
        },
    )


async def _check_finished(
    engine: AsyncEngine, send_ids: set[str], finisher: SendFinisher | None
) -> None:
    for send_id in send_ids:
        if finisher is None:
            await finish_if_complete(engine, send_id=send_id)
        else:
            finisher.poke(send_id)


async def finish_if_complete(engine: AsyncEngine, *, send_id: str) -> bool:
    """Mark a running send done when none of its deliveries is open; True if it did."""
    async with engine.begin() as session:
        open_row = (
            await session.execute(
                _ANY_OPEN.bindparams(bindparam("open", expanding=True)),
                {"send_id": send_id, "open": [str(s) for s in _OPEN]},
            )
        ).first()
        if open_row is not None:
            return False
        done = await session.execute(
            _FINISH,
            {
                "send_id": send_id,
                "done": str(SendStatus.DONE),
                "running": str(SendStatus.RUNNING),
                "now": utcnow(),
            },
        )
        return bool(getattr(done, "rowcount", 0))


class SendFinisher:
    """Checks whether sends are complete at most every ``interval_s`` per send.

    Every recorded batch would otherwise cost one more query per send; a check that is
    skipped is scheduled for later, so the last outcome of a send always gets its check.
    """

    def __init__(self, engine: AsyncEngine, *, interval_s: float = 0.5) -> None:
        self._engine = engine
        self._interval = interval_s
        self._last: dict[str, float] = {}
        self._scheduled: dict[str, asyncio.Task[None]] = {}

    def poke(self, send_id: str) -> None:
        if send_id in self._scheduled:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, self._last.get(send_id, 0.0) + self._interval - loop.time())
        self._scheduled[send_id] = asyncio.create_task(self._check(send_id, delay))

    async def _check(self, send_id: str, delay: float) -> None:
        try:
            if delay:
                await asyncio.sleep(delay)
            self._last[send_id] = asyncio.get_running_loop().time()
            del self._scheduled[send_id]
            await finish_if_complete(self._engine, send_id=send_id)
        except Exception:
            log.exception("send_finish_check_failed", send_id=send_id)

    async def close(self) -> None:
        tasks = list(self._scheduled.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
