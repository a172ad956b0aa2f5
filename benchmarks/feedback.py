"""Policy-storm benchmark: ``newsletter bench feedback [--count N] [--json]``.

Creates its own RabbitMQ vhost and PostgreSQL database (both removed at the end), starts a
:class:`FeedbackConsumer`, publishes ``N`` policy bounces from one receiving domain and prints
how long they took to apply, how many addresses were suppressed (must be 0) and how many
``domain.policy_alerted`` events were raised (must be 1).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import uuid
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
from sqlmodel import func, select

from services.subscription.feedback.consumer import FeedbackConsumer
from services.subscription.feedback.settings import load_feedback_policy
from shared.db.engine import create_engine, session_factory
from shared.db.migrate import upgrade
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

AMQP = os.environ.get("NEWSLETTER_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
POSTGRES = os.environ.get(
    "NEWSLETTER_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _rabbitmqctl(*args: str) -> None:
    binary = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    subprocess.run([binary, "-q", *args], check=True, capture_output=True, timeout=60)  # noqa: S603


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


async def _database(name: str, *, drop: bool) -> None:
    admin = await asyncpg.connect(POSTGRES)
    try:
        statement = (
            f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
            if drop
            else (f'CREATE DATABASE "{name}"')
        )
        await admin.execute(statement)
    finally:
        await admin.close()


def run(count: int) -> dict[str, float]:
    """Measure ``count`` policy bounces on a vhost and a database of the run's own."""
    name = f"nlbench_{uuid.uuid4().hex[:10]}"
    user = urlsplit(AMQP).username or "guest"
    _rabbitmqctl("add_vhost", name)
    try:
        _rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*")
        parts = urlsplit(AMQP)
        amqp_url = urlunsplit((parts.scheme, parts.netloc, "/" + quote(name, safe=""), "", ""))
        asyncio.run(_database(name, drop=False))
        try:
            pg = urlsplit(POSTGRES)
            database_url = urlunsplit((pg.scheme, pg.netloc, "/" + name, "", ""))
            upgrade(database_url)
            return asyncio.run(_measure(amqp_url, database_url, count))
        finally:
            asyncio.run(_database(name, drop=True))
    finally:
        _rabbitmqctl("delete_vhost", name)
