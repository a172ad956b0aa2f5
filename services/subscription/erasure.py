"""GDPR erasure: personal data goes, a hashed suppression entry stays.

What remains of an erased subscriber: the row with ``status = "erased"`` and no address, hash
or domain (so old links resolve to nothing), and a ``suppression`` row keyed by the address
hash with reason ``erased`` (so a later import or signup cannot silently bring the address
back). The mailbox's confirmation slot (``mailbox_slots.py``) is deleted. Consent records
keep only the address hash, their dates and their withdrawal (method ``erasure``): the ledger
still shows that consent existed and was withdrawn, without anything that names the person.
Delivery rows belong to the dispatcher and are not touched here: the admin API publishes
``SubscriberErased`` first, and the dispatcher blanks them.
"""

from __future__ import annotations

import structlog
from sqlalchemy import delete, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.subscription.address_rules import mailbox_hash
from services.subscription.records import set_languages, withdraw_consents
from shared.db.tables import (
    ConfirmationSlot,
    ConsentRecord,
    Subscriber,
    SubscriberStatus,
    Suppression,
)
from shared.db.tables.timestamps import utcnow

log = structlog.get_logger(__name__)


async def suppress_hash(session: AsyncSession, *, email_hash: str, reason: str) -> None:
    existing = await session.get(Suppression, email_hash)
    if existing is None:
        session.add(Suppression(email_hash=email_hash, reason=reason))
    else:
        existing.reason = reason
        existing.lifted_at = None
        session.add(existing)


async def _forget_mailbox(session: AsyncSession, email: str) -> None:
    await session.execute(
        delete(ConfirmationSlot).where(col(ConfirmationSlot.mailbox_hash) == mailbox_hash(email))
    )


async def erase_subscriber(*, session: AsyncSession, subscriber_id: int) -> bool:
    """Erase one subscriber; False if there is no such (unerased) subscriber."""
    subscriber = await session.get(Subscriber, subscriber_id)
    if subscriber is None or subscriber.status == SubscriberStatus.ERASED:
        return False
    now = utcnow()
    email_hash = subscriber.email_hash
    await withdraw_consents(session, subscriber_id=subscriber_id, now=now, method="erasure")
    await session.execute(
        update(ConsentRecord)
        .where(col(ConsentRecord.subscriber_id) == subscriber_id)
        .values(client_ip_hash="", source="")
    )
    await set_languages(session, subscriber_id, [])
    await suppress_hash(session, email_hash=email_hash, reason="erased")
    if subscriber.email:
        await _forget_mailbox(session, subscriber.email)
    subscriber.email = None
    subscriber.email_hash = ""
    subscriber.email_domain = ""
    subscriber.status = SubscriberStatus.ERASED
    subscriber.unsubscribed_at = subscriber.unsubscribed_at or now
    subscriber.updated_at = now
    session.add(subscriber)
    await session.commit()
    log.info("subscriber_erased", subscriber_id=subscriber_id)
    return True


async def erase_address(*, session: AsyncSession, email: str, email_hash: str) -> int | None:
    """Erase by address: the subscriber if any, and the suppression in every case."""
    found = await session.exec(select(Subscriber.id).where(Subscriber.email == email))
    subscriber_id = found.first()
    if subscriber_id is not None:
        await erase_subscriber(session=session, subscriber_id=subscriber_id)
        return subscriber_id
    await suppress_hash(session, email_hash=email_hash, reason="erased")
    await _forget_mailbox(session, email)
    await session.commit()
    return None
