"""Policy-storm benchmark: ``newsletter bench feedback [--count N] [--json]``.

Creates its own RabbitMQ vhost and PostgreSQL database (both removed at the end), starts a
:class:`FeedbackConsumer`, publishes ``N`` policy bounces from one receiving domain and prints
how long they took to apply, how many addresses were suppressed (must be 0) and how many
``domain.policy_alerted`` events were raised (must be 1).
"""

from __future__ import annotations

import asyncio
import time
import uuid

from sqlmodel import func, select

from benchmarks import scratch
from services.subscription.feedback.consumer import FeedbackConsumer
from services.subscription.feedback.settings import load_feedback_policy
from shared.db.engine import create_engine, session_factory
from shared.db.tables import BounceDecision, Suppression
from shared.messaging.publisher import Publisher
from shared.messaging.schemas import BounceReceived
from shared.messaging.topology import (
    BOUNCE_RECEIVED,
    DISPATCHER_DOMAIN_ALERTS,
    EVENTS,
    connect,
    declare_topology,
)


async def _measure(amqp_url: str, database_url: str, count: int) -> dict[str, float]:
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    connection = await connect(amqp_url)
    try:
        channel = await connection.channel()
        await declare_topology(channel)
        publisher = await Publisher.open(connection)
        consumer = await FeedbackConsumer.start(
            connection=connection,
            sessions=sessions,
            publisher=publisher,
            policy=load_feedback_policy(),
        )
        domain = f"storm-{uuid.uuid4().hex[:6]}.example"
        events = [
            BounceReceived(
                recipient=f"r{i}@{domain}",
                bounce_class="policy",
                status="5.7.1",
                diagnostic="550 5.7.1 blocked by policy",
                source="bench",
            )
            for i in range(count)
        ]
        started = time.perf_counter()
        for start in range(0, count, 250):
            await publisher.publish_many(
                events[start : start + 250], routing_key=BOUNCE_RECEIVED, exchange=EVENTS
            )
        applied = 0
        while applied < count:
            await asyncio.sleep(0.2)
            async with sessions() as session:
                applied = (
                    await session.exec(select(func.count()).select_from(BounceDecision))
                ).one()
        elapsed = time.perf_counter() - started
        async with sessions() as session:
            suppressed = (await session.exec(select(func.count()).select_from(Suppression))).one()
        alerts_queue = await channel.get_queue(DISPATCHER_DOMAIN_ALERTS.name)
        alerts = 0
        while (message := await alerts_queue.get(fail=False, timeout=5)) is not None:
            await message.ack()
            alerts += 1
        await consumer.stop()
        await publisher.close()
        return {
            "policy_bounces": count,
            "seconds": round(elapsed, 2),
            "events_per_s": round(count / elapsed, 1),
            "suppressed": suppressed,
            "alerts": alerts,
        }
    finally:
        await connection.close()
        await engine.dispose()


async def _in_database(amqp_url: str, count: int) -> dict[str, float]:
    async with scratch.database() as database_url:
        return await _measure(amqp_url, database_url, count)


def run(count: int) -> dict[str, float]:
    """Measure ``count`` policy bounces on a vhost and a database of the run's own."""
    with scratch.vhost() as amqp_url:
        return asyncio.run(_in_database(amqp_url, count))
