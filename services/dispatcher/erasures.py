"""GDPR erasure on the dispatcher's side: ``SubscriberErased`` -> addresses blanked.

The subscription service erases the subscriber and publishes ``SubscriberErased`` (with the
id only). Every ``delivery`` row of that subscriber, finished or not, loses its address and
domain; the row itself stays, so send reports and counts keep adding up. A delivery still
waiting in a queue is not sent: the claim skips subscribers who are no longer active
(``ledger``), and a job that carries the address finds its row marked ``unsubscribed``.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from aio_pika.abc import AbstractIncomingMessage
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.tables.deliveries import DeliveryStatus
from shared.db.tables.timestamps import UTCDateTime, utcnow
from shared.messaging.poison import decode_or_dead_letter
from shared.messaging.schemas import SubscriberErased

log = structlog.get_logger(__name__)

ERASED_ADDRESS = ""

_FORGET = text(
    "UPDATE delivery SET email = :erased, email_domain = :erased, updated_at = :now "
    "WHERE subscriber_id = :subscriber_id AND email <> :erased"
).bindparams(bindparam("now", type_=UTCDateTime()))
_DROP_OPEN = text(
    "UPDATE delivery SET status = :unsubscribed, updated_at = :now "
    "WHERE subscriber_id = :subscriber_id AND status IN :open"
).bindparams(bindparam("now", type_=UTCDateTime()), bindparam("open", expanding=True))


async def forget_subscriber(engine: AsyncEngine, *, subscriber_id: int) -> int:
    """Blank the address of every delivery of the subscriber; returns how many rows changed."""
    now = utcnow()
    async with engine.begin() as connection:
        await connection.execute(
            _DROP_OPEN,
            {
                "subscriber_id": subscriber_id,
                "unsubscribed": str(DeliveryStatus.UNSUBSCRIBED),
                "now": now,
                "open": [
                    str(DeliveryStatus.PENDING),
                    str(DeliveryStatus.QUEUED),
                    str(DeliveryStatus.DEFERRED),
                ],
            },
        )
        result = await connection.execute(
            _FORGET, {"subscriber_id": subscriber_id, "erased": ERASED_ADDRESS, "now": now}
        )
    return int(getattr(result, "rowcount", 0) or 0)


@dataclass
class ErasureHandler:
    engine: AsyncEngine

    async def handle(self, message: AbstractIncomingMessage) -> None:
        event = await decode_or_dead_letter(
            SubscriberErased, message, event="erasure_event_rejected"
        )
        if event is None:
            return
        rows = await forget_subscriber(self.engine, subscriber_id=event.subscriber_id)
        log.info("subscriber_forgotten", subscriber_id=event.subscriber_id, deliveries=rows)
        await message.ack()
