"""A look at the oldest dead letters without taking them: each message is fetched unacked and
goes back to ``newsletter.dead-letters`` when the channel closes. What the ops page shows of a
dead letter comes from its ``x-death`` header: why, from which queue, when, how often."""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import aio_pika
import structlog

from shared.messaging.topology import DEAD_LETTER_QUEUE

log = structlog.get_logger(__name__)

PEEK_LIMIT = 10


@dataclass(frozen=True)
class DeadLetter:
    message_type: str
    message_id: str
    routing_key: str
    reason: str
    from_queue: str
    deaths: int
    died_at: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def dead_letter_of(message: aio_pika.abc.AbstractIncomingMessage) -> DeadLetter:
    headers: dict[str, Any] = dict(message.headers or {})
    deaths = headers.get("x-death") or []
    # The broker puts the latest death first: why the message is here now.
    first: dict[str, Any] = dict(deaths[0]) if deaths and isinstance(deaths[0], dict) else {}
    keys = first.get("routing-keys") or [message.routing_key or ""]
    died_at = first.get("time")
    return DeadLetter(
        message_type=str(message.type or ""),
        message_id=str(message.message_id or ""),
        routing_key=str(keys[0] if keys else ""),
        reason=str(first.get("reason") or headers.get("x-first-death-reason") or ""),
        from_queue=str(first.get("queue") or headers.get("x-first-death-queue") or ""),
        deaths=int(sum(int(dict(d).get("count", 1)) for d in deaths if isinstance(d, dict))),
        died_at=died_at.isoformat() if isinstance(died_at, datetime) else str(died_at or ""),
    )


async def peek(
    connection: aio_pika.abc.AbstractConnection, *, limit: int = PEEK_LIMIT
) -> list[DeadLetter] | None:
    """Up to ``limit`` of the oldest dead letters, left in their queue; None if the broker
    could not be asked."""
    try:
        channel = await connection.channel(publisher_confirms=False)
    except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as err:
        log.warning("dead_letter_peek_failed", error=str(err))
        return None
    found: list[DeadLetter] = []
    try:
        queue = await channel.get_queue(DEAD_LETTER_QUEUE, ensure=True)
        for _ in range(limit):
            message = await queue.get(no_ack=False, fail=False, timeout=5)
            if message is None:
                break
            found.append(dead_letter_of(message))
    except aio_pika.exceptions.AMQPError as err:
        log.warning("dead_letter_peek_failed", error=str(err))
    finally:
        # Closing the channel returns every unacknowledged message to the queue.
        with contextlib.suppress(aio_pika.exceptions.AMQPError, RuntimeError):
            await channel.close()
    return found
