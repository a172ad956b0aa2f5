"""A consumed message whose body is not the expected schema is a poison message: rejected
without requeue, so the topology's dead-letter exchange keeps it (body and headers) for an
operator, and logged with the reason. Used by every consumer of a single event type."""

from __future__ import annotations

import structlog
from aio_pika.abc import AbstractIncomingMessage

from shared.messaging.schemas import M, UndecodableMessage, decode

log = structlog.get_logger(__name__)


async def decode_or_dead_letter(
    model: type[M], message: AbstractIncomingMessage, *, event: str
) -> M | None:
    """``message``'s body as ``model``; None once a poison body was dead-lettered (logged as
    ``event``)."""
    try:
        return decode(model, message.body)
    except UndecodableMessage as err:
        log.warning(event, reason=str(err)[:300])
        await message.reject(requeue=False)
        return None
