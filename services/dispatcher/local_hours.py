"""When a reader may get an issue: the send's local hour in their zone, outside quiet hours.

The planner writes each delivery with its not-before time (``due_at`` of a ``pending`` row):
with ``--local-time 09:00`` the next 09:00 in the reader's zone at or after the send starts;
without it, the start itself. Either moves to the end of the quiet hours when it falls inside
them. Nothing waits in a queue: the outbox sweeper publishes rows as they become due.
Zones come from the subscriber (NULL or unknown: the language's default from the settings).

The quiet hours hold for every later attempt of an issue mail too, whoever sets it
(:func:`outside_quiet_hours`): a deferral's next attempt (the worker), a breaker's hold, and
two gates every issue job passes, the relay (:class:`QuietGate`: a row due while its reader
is in quiet hours stays ``pending`` until their end, which covers the reconciler's re-drives,
resumed sends and warm-up carries) and the worker before its claim (a job that waited in the
queue into the quiet hours is parked the same way). Test sends (no reader) and transactional
mail are never held.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.clock import Clock
from shared.db.tables.deliveries import Send
from shared.db.tables.timestamps import UTCDateTime
from shared.settings import Settings

log = structlog.get_logger(__name__)

QuietHours = tuple[time, time]


@lru_cache(maxsize=1024)
def zone(name: str | None, default: str) -> ZoneInfo:
    """The zone called ``name``, or ``default`` when it is empty or not a known zone."""
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return ZoneInfo(default)


def in_quiet_hours(moment: time, quiet: QuietHours) -> bool:
    start, end = quiet
    if start < end:
        return start <= moment < end
    return moment >= start or moment < end  # the window spans midnight


def _after_quiet(local: datetime, quiet: QuietHours) -> datetime:
    """``local`` itself, or the end of the quiet hours it falls in (same zone)."""
    if not in_quiet_hours(local.timetz().replace(tzinfo=None), quiet):
        return local
    end = datetime.combine(local.date(), quiet[1], tzinfo=local.tzinfo)
    if end <= local:
        end = datetime.combine(local.date() + timedelta(days=1), quiet[1], tzinfo=local.tzinfo)
    return end


def outside_quiet_hours(moment: datetime, *, where: ZoneInfo, quiet: QuietHours | None) -> datetime:
    """``moment`` (aware), or the end of the reader's quiet hours when it falls inside them
    (UTC either way)."""
    if quiet is None:
        return moment.astimezone(UTC)
    return _after_quiet(moment.astimezone(where), quiet).astimezone(UTC)


def reader_zone(settings: Settings, *, time_zone: str | None, language: str) -> ZoneInfo:
    """The reader's zone as the planner uses it: their own, else their edition's default."""
    return zone(time_zone, settings.time_zone_for(language))


def not_before(
    *, start: datetime, where: ZoneInfo, local_time: time | None, quiet: QuietHours | None
) -> datetime:
    """The earliest moment (UTC) a reader in ``where`` gets a send that starts at ``start``."""
    local = start.astimezone(where)
    if local_time is not None:
        wanted = datetime.combine(local.date(), local_time, tzinfo=where)
        if wanted.astimezone(UTC) < start:
            wanted = datetime.combine(local.date() + timedelta(days=1), local_time, tzinfo=where)
        # A wall time that does not exist (spring forward) or exists twice: the UTC round trip
        # settles it on one real instant.
        local = wanted.astimezone(UTC).astimezone(where)
    if quiet is not None:
        local = _after_quiet(local, quiet)
    return local.astimezone(UTC)


def parse_local_time(value: str) -> time:
    """``"09:00"`` -> ``time(9, 0)``; ValueError otherwise."""
    parsed = time.fromisoformat(value.strip())
    if parsed.second or parsed.microsecond or parsed.tzinfo is not None:
        raise ValueError(f"a local time is HH:MM, not {value!r}")
    return parsed


def due_by_zone(
    zones: Iterable[str],
    *,
    default: str,
    start: datetime,
    local_time: time | None,
    quiet: QuietHours | None,
) -> tuple[datetime, dict[str, datetime]]:
    """The not-before time of the default zone, and of each named zone that differs from it."""
    base = not_before(start=start, where=zone(None, default), local_time=local_time, quiet=quiet)
    times: dict[str, datetime] = {}
    for name in zones:
        due = not_before(start=start, where=zone(name, default), local_time=local_time, quiet=quiet)
        if due != base:
            times[name] = due
    return base, times


def case_sql(times: Mapping[str, datetime], *, column: str) -> tuple[str, dict[str, object]]:
    """``CASE column WHEN :z0 THEN :d0 ... ELSE :d_default END`` and its parameters (the
    default's value is the caller's ``due_default``)."""
    params: dict[str, object] = {}
    whens: list[str] = []
    for i, (name, due) in enumerate(sorted(times.items())):
        params[f"zone_{i}"] = name
        params[f"due_{i}"] = due
        whens.append(f"WHEN :zone_{i} THEN :due_{i}")
    if not whens:
        return ":due_default", params
    return f"CASE {column} {' '.join(whens)} ELSE :due_default END", params


_SEGMENT_ZONES = text(
    "SELECT DISTINCT s.time_zone FROM subscriber s "
    "JOIN subscriber_language sl ON sl.subscriber_id = s.id AND sl.language = :language "
    "WHERE s.status = 'active' AND s.time_zone IS NOT NULL"
)


async def due_clause(
    sessions: async_sessionmaker[AsyncSession],
    *,
    settings: Settings,
    send: Send,
    language: str,
    dialect: str,
) -> tuple[str, dict[str, object]]:
    """The SQL expression of each reader's not-before time in one segment, and its parameters
    (``NULL``: at once, when the send has no local hour and there are no quiet hours)."""
    quiet = settings.quiet_window
    local_time = parse_local_time(send.local_time) if send.local_time else None
    if local_time is None and quiet is None:
        return "NULL", {}
    async with sessions() as session:
        zones = [
            str(z)
            for z in (await session.execute(_SEGMENT_ZONES, {"language": language})).scalars()
        ]
    start = send.started_at or send.scheduled_at or send.created_at
    base, times = due_by_zone(
        zones,
        default=settings.time_zone_for(language),
        start=start,
        local_time=local_time,
        quiet=quiet,
    )
    expression, params = case_sql(times, column="s.time_zone")
    params["due_default"] = base
    if dialect == "postgresql":  # parameters inside CASE have no type of their own there
        expression = f"CAST({expression} AS TIMESTAMP WITH TIME ZONE)"
    return expression, params


# Positions in the relay's pending rows (``id, subscriber_id, email, language, retries,
# queued_at, time_zone``).
_ID, _SUBSCRIBER, _LANGUAGE, _TIME_ZONE = 0, 1, 3, 6
_HOLD = text(
    "UPDATE delivery SET due_at = :until, updated_at = :now WHERE id = :id AND status = 'pending'"
).bindparams(bindparam("until", type_=UTCDateTime()), bindparam("now", type_=UTCDateTime()))


@dataclass
class QuietGate:
    """The relay's check before it publishes: a row whose reader is in their quiet hours now
    stays ``pending`` with ``due_at`` at the end of them (one ``UPDATE`` per batch, and none
    while nobody is in quiet hours); the outbox sweeper publishes it then."""

    sessions: async_sessionmaker[AsyncSession]
    settings: Settings
    clock: Clock

    async def admit(self, rows: Sequence[Any]) -> list[Any]:
        quiet = self.settings.quiet_window
        if quiet is None:
            return list(rows)
        now = self.clock.now()
        ends: dict[tuple[str | None, str], datetime] = {}  # one zone computation per batch
        held: dict[int, datetime] = {}
        for row in rows:
            if row[_SUBSCRIBER] is None:  # a test send's row: the editor wants it now
                continue
            key = (row[_TIME_ZONE], str(row[_LANGUAGE]))
            if key not in ends:
                where = reader_zone(self.settings, time_zone=key[0], language=key[1])
                ends[key] = outside_quiet_hours(now, where=where, quiet=quiet)
            if ends[key] > now:
                held[int(row[_ID])] = ends[key]
        if not held:
            return list(rows)
        async with self.sessions() as session:
            await session.execute(
                _HOLD, [{"id": i, "until": until, "now": now} for i, until in held.items()]
            )
            await session.commit()
        log.info("quiet_hours_held", count=len(held), until=str(min(held.values())))
        return [row for row in rows if int(row[_ID]) not in held]
