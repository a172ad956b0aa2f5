"""Warm-up of a new sending domain: a daily cap per receiving domain, on a ramp.

Mailbox providers distrust a domain that starts sending in volume. A sending domain marked new
(``newsletter send warmup DOMAIN``, a ``warmup_domain`` row) gets, on day 1 of its ramp, at
most the first cap per receiving domain, on day 2 the second, and so on
(``NEWSLETTER_WARMUP_CAPS``, or the row's own caps); after the last cap it is warm. The relay
asks :class:`WarmupGate` before it publishes a batch: what a receiving domain already got
today counts from the ledger (issue deliveries first published since midnight UTC), and the
rest of the batch for that domain stays ``pending`` with ``due_at`` at the next midnight:
carried to the next day, where the outbox sweeper finds it. Retries were counted on the day of
their first attempt and pass. Two relays at once may each admit up to the cap (a known
overshoot of at most one batch per planning dispatcher).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.dispatcher import ledger
from shared.addresses import address_domain
from shared.clock import Clock
from shared.db.tables.deliveries import WarmupDomain
from shared.db.tables.timestamps import UTCDateTime
from shared.settings import Settings, parse_caps
from shared.warmup_ramp import Ramp, day_start, ramp_today

log = structlog.get_logger(__name__)
Sessions = async_sessionmaker[AsyncSession]

_TODAY = text(
    "SELECT email_domain, COUNT(*) FROM delivery WHERE kind = 'issue' "
    "AND queued_at >= :day_start AND email_domain IN :domains GROUP BY email_domain"
).bindparams(bindparam("domains", expanding=True), bindparam("day_start", type_=UTCDateTime()))
_CARRY = text(
    "UPDATE delivery SET due_at = :next_day, updated_at = :now "
    "WHERE id IN :ids AND status = 'pending'"
).bindparams(
    bindparam("ids", expanding=True),
    bindparam("next_day", type_=UTCDateTime()),
    bindparam("now", type_=UTCDateTime()),
)


async def ramp_of(sessions: Sessions, *, settings: Settings, now: datetime) -> Ramp | None:
    """The sender's warm-up ramp today, or None when its domain is not marked new."""
    async with sessions() as session:
        return await ramp_today(session, settings=settings, now=now)


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
    sessions: Sessions
    settings: Settings
    clock: Clock

    async def admit(self, rows: Sequence[Any]) -> list[Any]:
        """The rows (``id, subscriber_id, email, language, retries, ...``) that may go out
        now; the others are carried to the next day in the ledger."""
        now = self.clock.now()
        ramp = await ramp_of(self.sessions, settings=self.settings, now=now)
        cap = ramp.cap if ramp is not None else None
        if cap is None:
            return list(rows)
        first = [r for r in rows if not r[4] and r[1] is not None]  # retries, test rows pass
        by_domain: dict[str, list[Any]] = defaultdict(list)
        for row in first:
            by_domain[address_domain(str(row[2]))].append(row)
        if not by_domain:
            return list(rows)
        async with self.sessions() as session:
            sent_today = Counter(
                {
                    str(d): int(n)
                    for d, n in await session.execute(
                        _TODAY, {"domains": sorted(by_domain), "day_start": day_start(now)}
                    )
                }
            )
            carried: list[int] = []
            for domain, domain_rows in by_domain.items():
                room = max(0, cap - sent_today[domain])
                carried += [int(r[0]) for r in domain_rows[room:]]
            if carried:
                await session.execute(
                    _CARRY,
                    {
                        "ids": ledger.padded(carried),
                        "next_day": day_start(now) + timedelta(days=1),
                        "now": now,
                    },
                )
                await session.commit()
        if carried:
            log.info("warmup_carried", count=len(carried), day=ramp.day if ramp else 0, cap=cap)
        held = set(carried)
        return [r for r in rows if int(r[0]) not in held]


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
