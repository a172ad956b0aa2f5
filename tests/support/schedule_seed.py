"""Seeding and ledger reads shared by the schedule tests (issue 17): readers with a time zone
and a cadence, and what of a send is still on its way.

Readers are written with one ``INSERT ... SELECT`` over ``generate_series`` (the schedule tests
run on a PostgreSQL database of their own), so ten thousand cost no more than ten.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db.tables.deliveries import Send
from shared.db.tables.timestamps import UTCDateTime

Sessions = async_sessionmaker[AsyncSession]

# Reader g (1..n): language, receiving domain and time zone taken in turn from the lists.
_READERS = text(
    "INSERT INTO subscriber (email, email_hash, email_domain, status, locale, created_at, "
    "updated_at, time_zone, cadence, paused_until) "
    "SELECT r.email, encode(sha256(convert_to(lower(r.email), 'UTF8')), 'hex'), r.domain, "
    "'active', r.language, now(), now(), r.zone, :cadence, :paused_until FROM ("
    "SELECT :prefix || '-' || g || '@' || (CAST(:domains AS TEXT[]))[g % :domain_count + 1] "
    "AS email, (CAST(:domains AS TEXT[]))[g % :domain_count + 1] AS domain, "
    "(CAST(:languages AS TEXT[]))[g % :language_count + 1] AS language, "
    "(CAST(:zones AS TEXT[]))[g % :zone_count + 1] AS zone "
    "FROM generate_series(1, :n) g) r "
    "RETURNING id, email"
).bindparams(bindparam("paused_until", type_=UTCDateTime()))
_SEGMENTS = text(
    "INSERT INTO subscriber_language (subscriber_id, language) "
    "SELECT id, locale FROM subscriber WHERE id = ANY(CAST(:ids AS INTEGER[]))"
)
# Rows on their way (published, claimed, waiting for a retry) or due: one snapshot, so a batch
# the broker refused (queued -> pending) is never missed between two counts.
_UNSETTLED = text(
    "SELECT COUNT(*) FROM delivery WHERE send_id = :s AND (status IN ('queued', 'sending', "
    "'deferred') OR (status = 'pending' AND (due_at IS NULL OR due_at <= :now)))"
).bindparams(bindparam("now", type_=UTCDateTime()))
_EDITIONS = text("SELECT COUNT(*) FROM edition WHERE send_id = :s")


async def add_readers(
    sessions: Sessions,
    count: int,
    *,
    prefix: str,
    languages: Sequence[str] = ("en",),
    domains: Sequence[str] = ("example.org",),
    zones: Sequence[str | None] = (None,),
    cadence: str = "every",
    paused_until: datetime | None = None,
) -> list[str]:
    """``count`` active readers ``<prefix>-<g>@<domain>``, each in one segment (its language),
    languages, domains and zones taken in turn; returns their addresses."""
    async with sessions() as session:
        rows = await session.execute(
            _READERS,
            {
                "prefix": prefix,
                "n": count,
                "languages": list(languages),
                "language_count": len(languages),
                "domains": list(domains),
                "domain_count": len(domains),
                "zones": list(zones),
                "zone_count": len(zones),
                "cadence": cadence,
                "paused_until": paused_until,
            },
        )
        written = rows.all()
        await session.execute(_SEGMENTS, {"ids": [int(row[0]) for row in written]})
        await session.commit()
    return [str(row[1]) for row in written]


async def unsettled(sessions: Sessions, send_id: str, *, now: datetime) -> int:
    """Deliveries of the send on their way or due at ``now`` (0: everything due went out)."""
    async with sessions() as session:
        return int((await session.execute(_UNSETTLED, {"s": send_id, "now": now})).scalar_one())


async def send_row(sessions: Sessions, send_id: str) -> Send | None:
    async with sessions() as session:
        return await session.get(Send, send_id)


async def send_status(sessions: Sessions, send_id: str) -> tuple[str | None, int]:
    """The send's status (None: no such send) and how many deliveries it planned."""
    send = await send_row(sessions, send_id)
    return (None, 0) if send is None else (send.status, send.total)


async def edition_count(sessions: Sessions, send_id: str) -> int:
    """How many editions the renderer stored for the send."""
    async with sessions() as session:
        found = await session.execute(_EDITIONS, {"s": send_id})
        return int(found.scalar_one())
