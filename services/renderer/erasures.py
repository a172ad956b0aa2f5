"""GDPR erasure on the renderer's side: ``SubscriberErased`` -> per-reader clicks deleted.

The subscription service publishes ``SubscriberErased`` (the id only) before it erases; the
renderer's queue ``renderer.erasures`` receives its own copy (the dispatcher's is
``dispatcher.erasures``) and deletes every ``reader_click`` row of that subscriber. The
aggregate counts (``link_click``) name no reader and stay. Consumed whether or not per-reader
mode is on now: rows written while it was on are deleted all the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from aio_pika.abc import AbstractIncomingMessage

from services.renderer.click_store import forget_reader
from services.renderer.store import Sessions
from shared.messaging.schemas import SubscriberErased, UndecodableMessage, decode

log = structlog.get_logger(__name__)


@dataclass
class ErasureHandler:
    sessions: Sessions

    async def handle(self, message: AbstractIncomingMessage) -> None:
        try:
            event = decode(SubscriberErased, message.body)
        except UndecodableMessage as err:
            log.warning("erasure_event_rejected", reason=str(err)[:300])
            await message.reject(requeue=False)  # to the dead-letter queue, with the body
            return
        rows = await forget_reader(self.sessions, subscriber_id=event.subscriber_id)
        log.info("reader_clicks_forgotten", subscriber_id=event.subscriber_id, rows=rows)
        await message.ack()
