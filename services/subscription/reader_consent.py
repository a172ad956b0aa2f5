"""Consent to per-reader analytics (``NEWSLETTER_PER_READER_ANALYTICS=true``), in the ledger.

The box on the signup form and the preference page is unticked unless the reader ticked it.
Each grant is a ``consent_record`` row of its own (``form="reader_analytics"``, the consent
text's version, the page's language, the source, the time); each withdrawal sets that row's
``withdrawn_at`` and ``withdrawal_method``. A grant counts once it is confirmed: at once on
the preference page (the reader came through their signed link), at the double opt-in for a
signup. Unsubscribing and erasure withdraw it with every other consent (``withdraw_consents``).

Readers of this state: the dispatcher's claim (only a consenting reader's tracked links carry
a per-delivery reference) and the renderer's click flusher (a per-reader click is written only
while consent stands), so a withdrawal stops per-reader records at once.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db.tables import ConsentRecord, Subscriber

FORM = "reader_analytics"
# The version of the consent text (page_texts.READER_ANALYTICS_CONSENT); bump it with the text.
TEXT_VERSION = "reader-analytics-2026-12-v1"
FIELD = "reader_analytics"  # the checkbox's name on both forms


async def standing(session: AsyncSession, *, subscriber_id: int) -> bool:
    """Whether a grant is open (confirmed or waiting for the opt-in) and not withdrawn."""
    found = await session.exec(
        select(ConsentRecord.id).where(
            ConsentRecord.subscriber_id == subscriber_id,
            ConsentRecord.form == FORM,
            col(ConsentRecord.withdrawn_at).is_(None),
        )
    )
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
    """Record a grant unless one is open already; the caller commits. True if recorded."""
    assert subscriber.id is not None
    if await standing(session, subscriber_id=subscriber.id):
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
