"""A new sending domain's warm-up ramp, read from the dispatcher's ``warmup_domain`` and
``delivery`` tables: which day of the ramp it is, today's cap per receiving domain, and what the
busiest receiving domains got today.

Two processes show it: ``newsletter send status`` (the dispatcher's CLI) and the ops page of the
subscription service, which is why it is in ``shared`` (like :mod:`shared.send_progress`). The
gate that applies the caps is the dispatcher's own (``services/dispatcher/warmup.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, time

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.tables.deliveries import WarmupDomain
from shared.db.tables.timestamps import UTCDateTime
from shared.settings import Settings, parse_caps

_TODAY_BUSIEST = text(
    "SELECT email_domain, COUNT(*) FROM delivery WHERE kind = 'issue' AND queued_at >= :day_start "
    "GROUP BY email_domain ORDER BY COUNT(*) DESC LIMIT :limit"
).bindparams(bindparam("day_start", type_=UTCDateTime()))


@dataclass(frozen=True)
class Ramp:
    domain: str
    day: int  # 1 on the first day
    caps: tuple[int, ...]
    today: list[tuple[str, int]] = field(default_factory=list)  # busiest receiving domains

    @property
    def cap(self) -> int | None:
        """Today's cap per receiving domain; None once warm."""
        return self.caps[self.day - 1] if 1 <= self.day <= len(self.caps) else None


def day_start(now: datetime) -> datetime:
    return datetime.combine(now.astimezone(UTC).date(), time(0), tzinfo=UTC)


async def ramp_today(
    session: AsyncSession, *, settings: Settings, now: datetime, busiest: int = 0
) -> Ramp | None:
    """The sender's ramp today (with the ``busiest`` receiving domains' counts), or None when
    its domain is not marked new."""
    domain = settings.sender.domain.lower()
    row = await session.get(WarmupDomain, domain)
    if row is None:
        return None
    caps = parse_caps(row.caps) if row.caps else settings.warmup_cap_list
    today: list[tuple[str, int]] = []
    if busiest:
        rows = await session.execute(
            _TODAY_BUSIEST, {"day_start": day_start(now), "limit": busiest}
        )
        today = [(str(d), int(n)) for d, n in rows]
    return Ramp(
        domain=domain,
        day=(now.astimezone(UTC).date() - row.started_on).days + 1,
        caps=caps,
        today=today,
    )
