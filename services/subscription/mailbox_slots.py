"""One confirmation mail per interval for all the variants of a mailbox together.

The per-address slot (``subscriber.last_confirmation_sent_at``,
:func:`~services.subscription.records.claim_confirmation_slot`) stops repeats of one address;
but ``victim+1@``, ``victim+2@``... are new addresses, each a new pending subscriber, and
without this second slot each would mail the same inbox. Here the key is the mailbox
(:func:`~services.subscription.address_rules.mailbox_key`, hashed): a conditional upsert takes
it if it is free or older than the interval, in the caller's transaction, so two replicas
racing for one mailbox cannot both win (the primary key serialises them).

- Only variants take it (``NormalizedAddress.is_variant``). The mailbox's own address keeps
  just its per-address slot, so nobody can keep ``victim@`` from its confirmation mail by
  posting ``victim+x@`` every hour; an inbox gets at most two mails per interval (its own
  address's and one variant's).
- A variant that loses is stored as usual and gets the same answer; no mail is sent and none
  is queued for later, and its per-address slot is given back in the same transaction, so
  submitting it again after the interval mails it.
- A slot taken for a mail the broker then refused is given back (:func:`release`), as the
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
# The rows locked in key order, as CLAIM_MANY locks them, so the two cannot deadlock.
RELEASE_MANY = text(
    "DELETE FROM confirmation_slot WHERE mailbox_hash IN (SELECT mailbox_hash FROM "
    "confirmation_slot WHERE mailbox_hash = ANY(:keys) AND last_sent_at = :claimed_at "
    "ORDER BY mailbox_hash FOR UPDATE)"
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
