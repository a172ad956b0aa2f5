"""Queue figures from passive queue declares over AMQP, which work everywhere: the ready count
and consumers only (the broker does not report unacked messages to a declare)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import aio_pika

from services.subscription.ops.queue_snapshots import QueueSnapshot, QueueStat


async def read_by_declares(
    connection: aio_pika.abc.AbstractConnection, names: Sequence[str]
) -> QueueSnapshot:
    """Passive declares: the ready count and consumers; a missing queue closes its channel."""
    stats: list[QueueStat] = []
    channel = await connection.channel(publisher_confirms=False)
    try:
        for name in names:
            try:
                queue = await channel.declare_queue(name, passive=True, timeout=5)
            except aio_pika.exceptions.ChannelClosed:
                stats.append(QueueStat(name=name, exists=False))
                channel = await connection.channel(publisher_confirms=False)
                continue
            result = queue.declaration_result
            stats.append(
                QueueStat(
                    name=name,
                    ready=int(result.message_count or 0),
                    consumers=int(result.consumer_count or 0),
                )
            )
    finally:
        if not channel.is_closed:
            await channel.close()
    return QueueSnapshot(source="amqp", queues=tuple(stats), taken_at=time.monotonic())
