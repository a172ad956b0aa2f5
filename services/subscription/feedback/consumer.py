"""Consumer of ``subscription.feedback``: filled in by the bounces work.

Interface the subscription app relies on::

    consumer = await FeedbackConsumer.start(connection=..., sessions=..., publisher=...)
    ...
    await consumer.stop()
"""

from __future__ import annotations

from aio_pika.abc import AbstractRobustConnection
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.messaging.publisher import Publisher


class FeedbackConsumer:
    @classmethod
    async def start(
        cls,
        *,
        connection: AbstractRobustConnection,
        sessions: async_sessionmaker[AsyncSession],
        publisher: Publisher,
    ) -> FeedbackConsumer:
        return cls()

    async def stop(self) -> None:
        return None
