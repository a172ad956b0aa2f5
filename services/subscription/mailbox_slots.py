"""One confirmation mail per mailbox per interval, whatever variant of its address was typed.

The per-address slot (``subscriber.last_confirmation_sent_at``,
:func:`~services.subscription.records.claim_confirmation_slot`) stops repeats of one address;
but ``victim+1@``, ``victim+2@``... are new addresses, each a new pending subscriber, and
without this second slot each would mail the same inbox. Here the key is the mailbox
(:func:`~services.subscription.address_rules.mailbox_key`, hashed): a conditional upsert takes
it if it is free or older than the interval, in the caller's transaction, so two replicas
racing for one mailbox cannot both win (the primary key serialises them). A signup that loses
is stored as usual and gets the same answer; only its mail is not sent.

A slot taken for a mail the broker then refused is given back (:func:`release`), as the
per-address slot is.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db.tables import ConfirmationSlot

# The batch form of :func:`claim` for the signup group commit (PostgreSQL): the keys must be
# distinct (one row may not be updated twice by one statement).
CLAIM_MANY = text(
    "INSERT INTO confirmation_slot (mailbox_hash, last_sent_at) "
    "SELECT k, :now FROM unnest(CAST(:keys AS text[])) AS t(k) ORDER BY k "
    "ON CONFLICT (mailbox_hash) DO UPDATE SET last_sent_at = excluded.last_sent_at "
    "WHERE confirmation_slot.last_sent_at <= :cutoff RETURNING mailbox_hash"
)
RELEASE_MANY = text(
    "DELETE FROM confirmation_slot WHERE mailbox_hash = ANY(:keys) AND last_sent_at = :claimed_at"
)


def _upsert(dialect: str) -> Any:
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(ConfirmationSlot)


async def claim(
    session: AsyncSession, *, mailbox_hash: str, now: datetime, interval_s: int
) -> bool:
    """Take the mailbox's slot if it is free or older than ``interval_s``; False if taken."""
    dialect = (await session.connection()).dialect.name
    statement = _upsert(dialect).values(mailbox_hash=mailbox_hash, last_sent_at=now)
    statement = statement.on_conflict_do_update(
        index_elements=[col(ConfirmationSlot.mailbox_hash)],
        set_={"last_sent_at": statement.excluded.last_sent_at},
        where=col(ConfirmationSlot.last_sent_at) <= now - timedelta(seconds=interval_s),
    ).returning(col(ConfirmationSlot.mailbox_hash))
    result = await session.execute(statement)
    return result.first() is not None


async def release(session: AsyncSession, *, mailbox_hash: str, claimed_at: datetime) -> None:
    """Give back a slot this signup took (and nobody took again since)."""
    await session.execute(
        delete(ConfirmationSlot).where(
            col(ConfirmationSlot.mailbox_hash) == mailbox_hash,
            col(ConfirmationSlot.last_sent_at) == claimed_at,
        )
    )


async def claim_many(
    connection: AsyncConnection, *, keys: Sequence[str], now: datetime, interval_s: int
) -> set[str]:
    """The distinct ``keys`` whose slot this batch took (PostgreSQL)."""
    if not keys:
        return set()
    cutoff = now - timedelta(seconds=interval_s)
    rows = await connection.execute(
        CLAIM_MANY, {"keys": sorted(set(keys)), "now": now, "cutoff": cutoff}
    )
    return {key for (key,) in rows}


async def release_many(
    connection: AsyncConnection, *, keys: Sequence[str], claimed_at: datetime
) -> None:
    if keys:
        await connection.execute(RELEASE_MANY, {"keys": list(keys), "claimed_at": claimed_at})
