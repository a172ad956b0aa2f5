"""What every process opens first: the database engine, a robust AMQP connection with the
topology declared, and a confirming publisher, each closed by the caller's exit stack."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass

from aio_pika.abc import AbstractRobustConnection
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db.engine import create_engine, session_factory
from shared.messaging.publisher import Publisher
from shared.messaging.topology import connect, declare_topology


@dataclass(frozen=True)
class Resources:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    connection: AbstractRobustConnection
    publisher: Publisher


async def open_resources(
    stack: AsyncExitStack, *, database_url: str, amqp_url: str, pool_size: int = 10
) -> Resources:
    """Open the shared resources on ``stack`` (closed in reverse order when it unwinds)."""
    engine = create_engine(database_url, pool_size=pool_size)
    stack.push_async_callback(engine.dispose)
    connection = await connect(amqp_url)
    stack.push_async_callback(connection.close)
    channel = await connection.channel()
    await declare_topology(channel)
    await channel.close()
    publisher = await Publisher.open(connection)
    stack.push_async_callback(publisher.close)
    return Resources(
        engine=engine,
        sessions=session_factory(engine),
        connection=connection,
        publisher=publisher,
    )
