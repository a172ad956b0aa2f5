"""Consent to per-reader analytics (``NEWSLETTER_PER_READER_ANALYTICS=true``), in the ledger.

The box on the signup form and the preference page is unticked unless the reader ticked it.
Each grant is a ``consent_record`` row of its own (``form="reader_analytics"``, the consent
text's version, the page's language, the source, the time); each withdrawal sets that row's
``withdrawn_at`` and ``withdrawal_method``. A grant counts only once it is confirmed, and only
by an act of the address's owner on a page they reached through their own signed link:

- on the preference page, at once;
- at the double opt-in, only if the box is ticked *on the confirmation page* (``settle_at_opt_in``).
  Anyone can post the public signup form for any address, so the box ticked there is only a
  wish waiting for the owner: the confirmation page shows the box again, unticked, and an
  opt-in without the tick withdraws the waiting grant instead of confirming it.

Unsubscribing and erasure withdraw it with every other consent (``withdraw_consents``).

Readers of this state: the dispatcher's claim (only a consenting reader's tracked links carry
a per-delivery reference) and the renderer's click flusher (a per-reader click is written only
while consent stands), so a withdrawal stops per-reader records at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db.tables import ConsentRecord, Subscriber

FORM = "reader_analytics"
# The version of the consent text (page_texts.READER_ANALYTICS_CONSENT); bump it with the text.
TEXT_VERSION = "reader-analytics-2026-12-v1"
FIELD = "reader_analytics"  # the checkbox's name on the signup, confirmation and preference forms
NOT_TICKED_AT_OPT_IN = "not ticked at opt-in"  # the withdrawal method of an unconfirmed wish


def _open(subscriber_id: int, *, confirmed: bool | None) -> Any:
    """Open (not withdrawn) grants of the subscriber: confirmed, waiting, or either (None)."""
    query = select(ConsentRecord.id).where(
        ConsentRecord.subscriber_id == subscriber_id,
        ConsentRecord.form == FORM,
        col(ConsentRecord.withdrawn_at).is_(None),
    )
    if confirmed is True:
        query = query.where(col(ConsentRecord.confirmed_at).is_not(None))
    elif confirmed is False:
        query = query.where(col(ConsentRecord.confirmed_at).is_(None))
    return query


async def standing(session: AsyncSession, *, subscriber_id: int) -> bool:
    """Whether the reader's consent holds: a confirmed grant, not withdrawn."""
    found = await session.exec(_open(subscriber_id, confirmed=True))
    return found.first() is not None


async def waiting(session: AsyncSession, *, subscriber_id: int) -> bool:
    """Whether a signup's grant waits for the opt-in (ticked on the public form, by anyone)."""
    found = await session.exec(_open(subscriber_id, confirmed=False))
    return found.first() is not None


async def grant(
    session: AsyncSession,
    *,
    subscriber: Subscriber,
    now: datetime,
    language: str,
    source: str,
    confirmed: bool,
    client_ip_hash: str = "",
) -> bool:
    """Record a grant unless one stands already (or, for a waiting one, unless any is open);
    the caller commits. True if recorded. A waiting grant never blocks a confirmed one."""
    assert subscriber.id is not None
    found = await session.exec(_open(subscriber.id, confirmed=True if confirmed else None))
    if found.first() is not None:
        return False
    await session.execute(
        insert(ConsentRecord).values(
            subscriber_id=subscriber.id,
            email_hash=subscriber.email_hash,
            consent_text_version=TEXT_VERSION,
            consent_language=language,
            form=FORM,
            source=source[:255],
            client_ip_hash=client_ip_hash,
            given_at=now,
            confirmed_at=now if confirmed else None,
        )
    )
    return True


async def withdraw(
    session: AsyncSession,
    *,
    subscriber_id: int,
    now: datetime,
    method: str,
    unconfirmed_only: bool = False,
) -> int:
    """Withdraw the open grants; the caller commits. Returns how many rows were withdrawn.

    ``unconfirmed_only``: the signup form (anyone can post it for any address) may take back a
    grant still waiting for the opt-in, never one its owner confirmed.
    """
    statement = update(ConsentRecord).where(
        col(ConsentRecord.subscriber_id) == subscriber_id,
        col(ConsentRecord.form) == FORM,
        col(ConsentRecord.withdrawn_at).is_(None),
    )
    if unconfirmed_only:
        statement = statement.where(col(ConsentRecord.confirmed_at).is_(None))
    result = await session.execute(statement.values(withdrawn_at=now, withdrawal_method=method))
    return int(getattr(result, "rowcount", 0) or 0)


@dataclass(frozen=True, slots=True)
class OptInTick:
    """The box ticked on the confirmation page: the page's language and the client's IP hash."""

    language: str
    client_ip_hash: str = ""


async def settle_at_opt_in(
    session: AsyncSession, *, subscriber: Subscriber, now: datetime, tick: OptInTick | None
) -> None:
    """At the double opt-in (the caller commits, with the subscriber's confirmation): ticked on
    the confirmation page, the waiting grant is confirmed (or, with none waiting, a grant is
    recorded confirmed); not ticked, a waiting grant is withdrawn, never confirmed."""
    assert subscriber.id is not None
    if tick is None:
        await withdraw(
            session,
            subscriber_id=subscriber.id,
            now=now,
            method=NOT_TICKED_AT_OPT_IN,
            unconfirmed_only=True,
        )
        return
    confirmed = await session.execute(
        update(ConsentRecord)
        .where(
            col(ConsentRecord.subscriber_id) == subscriber.id,
            col(ConsentRecord.form) == FORM,
            col(ConsentRecord.withdrawn_at).is_(None),
            col(ConsentRecord.confirmed_at).is_(None),
        )
        .values(confirmed_at=now)
    )
    if not getattr(confirmed, "rowcount", 0):
        await grant(
            session,
            subscriber=subscriber,
            now=now,
            language=tick.language,
            source="confirmation page",
            confirmed=True,
            client_ip_hash=tick.client_ip_hash,
        )
