"""Warm-up of a new sending domain: a daily cap per receiving domain, on a ramp.

Mailbox providers distrust a domain that starts sending in volume. A sending domain marked new
(``newsletter send warmup DOMAIN``, a ``warmup_domain`` row) gets, on day 1 of its ramp, at
most the first cap per receiving domain, on day 2 the second, and so on
(``NEWSLETTER_WARMUP_CAPS``, or the row's own caps); after the last cap it is warm.

A delivery counts on the UTC day it is first queued (``queued_at``, which the ledger keeps).
The relay asks :class:`WarmupGate` in the transaction that marks a batch queued: the gate
reserves the batch's share of the day's cap in a ``warmup_quota`` row per receiving domain with
one conditional ``UPDATE ... RETURNING`` (the row is created on the day's first reservation,
from what the ledger shows that domain got since midnight). The database serialises the
reservations of every relay of every dispatcher process on that row, and the rows are marked
queued before it is released, so the cap holds exactly however many relay at once. The rows
beyond the grant stay ``pending`` with ``due_at`` at the next midnight: carried to the next
day, where the outbox sweeper finds them. Rows another relay marked first give their share
back in the same transaction. Rows queued before (a batch the broker refused, a job a paused
send parked) were counted that day, and retries on the day of their first attempt: they pass.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Date, Integer, bindparam, text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.dispatcher import ledger
from shared.addresses import address_domain
from shared.db.tables.deliveries import WarmupDomain
from shared.db.tables.timestamps import UTCDateTime
from shared.settings import Settings, parse_caps
from shared.warmup_ramp import day_start, ramp_today

log = structlog.get_logger(__name__)
Sessions = async_sessionmaker[AsyncSession]

# The day's row, created once: what the ledger shows the domain got today before any
# reservation (a domain marked new mid-day, mail queued before this table existed).
_OPEN_DAY = text(
    "INSERT INTO warmup_quota (sending_domain, day, email_domain, used, last_grant) "
    "VALUES (:sender, :day, CAST(:domain AS VARCHAR), (SELECT COUNT(*) FROM delivery "
    "WHERE kind = 'issue' AND email_domain = CAST(:domain AS VARCHAR) "
    "AND queued_at >= :day_start AND queued_at < :next_day), 0) "
    "ON CONFLICT (sending_domain, day, email_domain) DO NOTHING"
).bindparams(
    bindparam("day", type_=Date()),
    bindparam("day_start", type_=UTCDateTime()),
    bindparam("next_day", type_=UTCDateTime()),
)
# Every right-hand side reads the row as it was: ``last_grant`` is what this reservation got.
# A concurrent reservation waits on the row lock and then reads the updated row.
_RESERVE = text(
    "UPDATE warmup_quota SET "
    "last_grant = CASE WHEN used >= :cap THEN 0 WHEN used + :want > :cap THEN :cap - used "
    "ELSE :want END, "
    "used = CASE WHEN used >= :cap THEN used WHEN used + :want > :cap THEN :cap "
    "ELSE used + :want END "
    "WHERE sending_domain = :sender AND day = :day AND email_domain = :domain "
    "RETURNING last_grant"
).bindparams(
    bindparam("day", type_=Date()),
    bindparam("cap", type_=Integer()),
    bindparam("want", type_=Integer()),
)
_GIVE_BACK = text(
    "UPDATE warmup_quota SET used = CASE WHEN used > :n THEN used - :n ELSE 0 END "
    "WHERE sending_domain = :sender AND day = :day AND email_domain = :domain"
).bindparams(bindparam("day", type_=Date()), bindparam("n", type_=Integer()))
_CARRY = text(
    "UPDATE delivery SET due_at = :next_day, updated_at = :now "
    "WHERE id IN :ids AND status = 'pending'"
).bindparams(
    bindparam("ids", expanding=True),
    bindparam("next_day", type_=UTCDateTime()),
    bindparam("now", type_=UTCDateTime()),
)


@dataclass
class Reservation:
    """What one batch reserved: the day, and the rows granted per receiving domain."""

    sender: str = ""
    day: date | None = None
    granted: dict[str, list[int]] = field(default_factory=dict)

    async def give_back(self, session: AsyncSession, unsent: Iterable[int]) -> int:
        """Return the share of granted rows that this batch did not mark queued (another relay
        did), in the caller's transaction; how many."""
        if self.day is None:
            return 0
        left = set(unsent)
        returned = 0
        for domain in sorted(self.granted):
            n = sum(1 for delivery_id in self.granted[domain] if delivery_id in left)
            if n:
                await session.execute(
                    _GIVE_BACK, {"sender": self.sender, "day": self.day, "domain": domain, "n": n}
                )
                returned += n
        return returned


async def mark_new(
    sessions: Sessions, *, domain: str, started_on: date, caps: str = ""
) -> WarmupDomain:
    if caps:
        parse_caps(caps)
    async with sessions() as session:
        row = await session.get(WarmupDomain, domain.lower())
        row = row or WarmupDomain(domain=domain.lower(), started_on=started_on)
        row.started_on, row.caps = started_on, caps
        session.add(row)
        await session.commit()
    log.info("warmup_marked", domain=domain.lower(), started_on=started_on.isoformat())
    return row


async def mark_warm(sessions: Sessions, *, domain: str) -> bool:
    async with sessions() as session:
        row = await session.get(WarmupDomain, domain.lower())
        if row is None:
            return False
        await session.delete(row)
        await session.commit()
    return True


@dataclass
class WarmupGate:
    settings: Settings

    async def reserve(
        self, session: AsyncSession, rows: Sequence[Any], *, now: datetime
    ) -> tuple[list[Any], Reservation]:
        """The rows (``id, subscriber_id, email, language, retries, ...``) that may go out
        now, with what they reserved of today's caps; the others are carried to the next day.
        Runs in the caller's transaction, which holds the day's quota rows until it commits."""
        ramp = await ramp_today(session, settings=self.settings, now=now)
        cap = ramp.cap if ramp is not None else None
        if ramp is None or cap is None:
            return list(rows), Reservation()
        # A delivery counts on the day it is first queued (its ``queued_at``, as the ledger
        # shows it): rows queued before (a batch the broker refused, a job parked by a paused
        # send), retries and test rows pass.
        first = [r for r in rows if r[5] is None and not r[4] and r[1] is not None]
        by_domain: dict[str, list[Any]] = defaultdict(list)
        for row in first:
            by_domain[address_domain(str(row[2]))].append(row)
        reservation = Reservation(sender=ramp.domain, day=day_start(now).date())
        if not by_domain:
            return list(rows), reservation
        start = day_start(now)
        key = {"sender": ramp.domain, "day": reservation.day}
        carried: list[int] = []
        for domain in sorted(by_domain):  # one order of row locks in every process
            domain_rows = by_domain[domain]
            await session.execute(
                _OPEN_DAY,
                {
                    **key,
                    "domain": domain,
                    "day_start": start,
                    "next_day": start + timedelta(days=1),
                },
            )
            granted = int(
                (
                    await session.execute(
                        _RESERVE, {**key, "domain": domain, "cap": cap, "want": len(domain_rows)}
                    )
                ).scalar_one()
            )
            reservation.granted[domain] = [int(r[0]) for r in domain_rows[:granted]]
            carried += [int(r[0]) for r in domain_rows[granted:]]
        if carried:
            await session.execute(
                _CARRY,
                {"ids": ledger.padded(carried), "next_day": start + timedelta(days=1), "now": now},
            )
            log.info("warmup_carried", count=len(carried), day=ramp.day, cap=cap)
        held = set(carried)
        return [r for r in rows if int(r[0]) not in held], reservation


async def describe(sessions: Sessions, *, settings: Settings, now: datetime) -> list[str]:
    """Lines for ``send status``: the ramp today and what the busiest domains got."""
    async with sessions() as session:
        ramp = await ramp_today(session, settings=settings, now=now, busiest=5)
    if ramp is None:
        return []
    cap = ramp.cap
    caps = ",".join(str(c) for c in ramp.caps)
    lines = [
        f"warm-up: {ramp.domain} day {ramp.day} of {len(ramp.caps)} (caps {caps}): "
        + (f"at most {cap} per receiving domain today" if cap is not None else "warm, no cap")
    ]
    if ramp.today:
        lines.append("  today: " + ", ".join(f"{d} {n}" for d, n in ramp.today))
    return lines
