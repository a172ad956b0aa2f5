"""The dead-letter queue for operators: look without taking, replay where it came from.

``peek`` takes messages without acking and closes the channel, which returns them to the
queue. ``replay`` republishes each message (with confirms) to ``newsletter.commands`` under its
original routing key and acks it only after the confirm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from services.dispatcher.retry import REASON_HEADER, REPLAYED_HEADER, ROUTING_HEADER
from shared.messaging.topology import (
    BOUNCE_RECEIVED,
    COMMANDS,
    DEAD_LETTER_QUEUE,
    EVENTS,
    SEND_CONTROLLED,
    UNSUBSCRIBE_REQUESTED,
    connect,
)

EVENT_KEYS = frozenset({BOUNCE_RECEIVED, UNSUBSCRIBE_REQUESTED, SEND_CONTROLLED})


@dataclass(frozen=True)
class DeadLetter:
    message_id: str | None
    type: str | None
    routing_key: str
    reason: str
    body: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "type": self.type,
            "routing_key": self.routing_key,
            "reason": self.reason,
            "body": self.body[:2000],
        }


def describe(message: AbstractIncomingMessage) -> DeadLetter:
    headers = message.headers or {}
    reason = str(headers.get(REASON_HEADER, ""))
    routing_key = str(headers.get(ROUTING_HEADER, "") or "")
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        death = deaths[0]
        if not reason:
            reason = f"{_text(death.get('reason'))} from {_text(death.get('queue'))}"
        keys = death.get("routing-keys")
        if not routing_key and isinstance(keys, list) and keys:
            routing_key = _text(keys[0])
    return DeadLetter(
        message_id=message.message_id,
        type=message.type,
        routing_key=routing_key or message.routing_key or "",
        reason=reason or "unknown",
        body=message.body.decode("utf-8", "replace"),
    )


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


async def peek(amqp_url: str, *, limit: int) -> list[DeadLetter]:
    connection = await connect(amqp_url)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=0)
        queue = await channel.get_queue(DEAD_LETTER_QUEUE, ensure=True)
        letters: list[DeadLetter] = []
        while len(letters) < limit:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            letters.append(describe(message))
        await channel.close()  # unacked messages go back to the queue
        return letters
    finally:
        await connection.close()


async def replay(amqp_url: str, *, limit: int, message_id: str | None = None) -> int:
    connection = await connect(amqp_url)
    replayed = 0
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        queue = await channel.get_queue(DEAD_LETTER_QUEUE, ensure=True)
        commands = await channel.get_exchange(COMMANDS, ensure=True)
        events = await channel.get_exchange(EVENTS, ensure=True)
        skipped: list[AbstractIncomingMessage] = []
        while replayed < limit:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            if message_id is not None and message.message_id != message_id:
                skipped.append(message)
                continue
            letter = describe(message)
            headers = {
                k: v
                for k, v in (message.headers or {}).items()
                if k not in {REASON_HEADER, ROUTING_HEADER, "x-death", "x-delivery-count"}
                and not k.startswith("x-first-death")
                and not k.startswith("x-last-death")
            }
            headers[REPLAYED_HEADER] = 1
            target = events if letter.routing_key in EVENT_KEYS else commands
            await target.publish(
                aio_pika.Message(
                    body=message.body,
                    content_type=message.content_type,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=message.message_id,
                    type=message.type,
                    headers=headers,
                ),
                routing_key=letter.routing_key,
                mandatory=True,
                timeout=10,
            )
            await message.ack()
            replayed += 1
        for message in skipped:
            await message.nack(requeue=True)
        await channel.close()
        return replayed
    finally:
        await connection.close()
