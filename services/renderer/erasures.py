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
from shared.messaging.poison import decode_or_dead_letter
from shared.messaging.schemas import SubscriberErased

log = structlog.get_logger(__name__)


@dataclass
class ErasureHandler:
    sessions: Sessions

    async def handle(self, message: AbstractIncomingMessage) -> None:
        event = await decode_or_dead_letter(
            SubscriberErased, message, event="erasure_event_rejected"
        )
        if event is None:
            return
        rows = await forget_reader(self.sessions, subscriber_id=event.subscriber_id)
        log.info("reader_clicks_forgotten", subscriber_id=event.subscriber_id, rows=rows)
        await message.ack()
