"""The feedback consumer against the real broker and both database engines."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractRobustConnection
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.subscription.feedback.consumer import FeedbackConsumer
from services.subscription.feedback.policy import FeedbackPolicy
from services.subscription.routes import bounces as bounces_routes
from shared.addresses import address_hash
from shared.db.engine import create_engine, session_factory
from shared.db.tables import (
    BounceDecision,
    ConsentRecord,
    SoftBounceScore,
    Subscriber,
    SubscriberLanguage,
    Suppression,
)
from shared.messaging.publisher import Publisher
from shared.messaging.schemas import (
    BounceClass,
    BounceReceived,
    DomainPolicyAlerted,
    UnsubscribeRequested,
    decode,
)
from shared.messaging.topology import (
    BOUNCE_RECEIVED,
    DEAD_LETTER_QUEUE,
    DISPATCHER_DOMAIN_ALERTS,
    EVENTS,
    UNSUBSCRIBE_REQUESTED,
    connect,
)
from shared.settings import load_settings

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Harness:
    sessions: async_sessionmaker[AsyncSession]
    publisher: Publisher
    connection: AbstractRobustConnection
    clock: Clock = field(default_factory=Clock)


@pytest.fixture
async def harness(database_url: str, amqp_url: str) -> AsyncIterator[Harness]:
    engine = create_engine(database_url)
    connection = await connect(amqp_url)
    publisher = await Publisher.open(connection)
    clock = Clock()
    consumer = await FeedbackConsumer.start(
        connection=connection,
        sessions=session_factory(engine),
        publisher=publisher,
        policy=FeedbackPolicy(soft_threshold=3, storm_threshold=20),
        clock=clock,
    )
    try:
        yield Harness(session_factory(engine), publisher, connection, clock)
    finally:
        await consumer.stop()
        await publisher.close()
        await connection.close()
        await engine.dispose()


async def add_subscriber(h: Harness, *, status: str = "active") -> Subscriber:
    email = f"r-{uuid.uuid4().hex[:10]}@example.com"
    async with h.sessions() as session:
        subscriber = Subscriber(
            email=email, email_hash=address_hash(email), email_domain="example.com", status=status
        )
        session.add(subscriber)
        await session.flush()
        assert subscriber.id is not None
        session.add(SubscriberLanguage(subscriber_id=subscriber.id, language="ru"))
        session.add(
            ConsentRecord(
                subscriber_id=subscriber.id,
                email_hash=subscriber.email_hash,
                consent_text_version="v1",
                consent_language="ru",
            )
        )
        await session.commit()
        return subscriber


def bounce(email: str, bounce_class: BounceClass, **extra: object) -> BounceReceived:
    extra.setdefault("status", "5.1.1" if bounce_class == "hard" else "4.2.2")
    return BounceReceived(
        recipient=email,
        bounce_class=bounce_class,
        diagnostic="smtp; test",
        source="test",
        evidence="test-evidence",
        **extra,  # type: ignore[arg-type]
    )


async def eventually(read: Callable[[], Awaitable[bool]], *, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if await read():
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def decisions(h: Harness, email_hash: str) -> list[BounceDecision]:
    async with h.sessions() as session:
        rows = await session.exec(
            select(BounceDecision)
            .where(BounceDecision.email_hash == email_hash)
            .order_by(col(BounceDecision.id))
        )
        return list(rows.all())


async def publish_and_wait(h: Harness, event: BounceReceived, *, count: int) -> None:
    await h.publisher.publish_event(event, routing_key=BOUNCE_RECEIVED)
    email_hash = address_hash(event.recipient)

    async def applied() -> bool:
        return len(await decisions(h, email_hash)) >= count

    await eventually(applied)


async def test_hard_bounce_suppresses_at_once_and_a_duplicate_changes_nothing(
    harness: Harness,
) -> None:
    subscriber = await add_subscriber(harness)
    assert subscriber.email is not None
    event = bounce(subscriber.email, "hard", delivery_id=77, language="ru")
    await publish_and_wait(harness, event, count=1)
    await harness.publisher.publish_event(event, routing_key=BOUNCE_RECEIVED)  # redelivery
    await publish_and_wait(harness, bounce(subscriber.email, "delayed"), count=2)
    rows = await decisions(harness, subscriber.email_hash)
    assert [(r.bounce_class, r.decision) for r in rows] == [
        ("hard", "suppressed"),
        ("delayed", "recorded"),
    ]
    assert rows[0].subscriber_id == subscriber.id
    assert (rows[0].delivery_id, rows[0].language, rows[0].evidence) == (77, "ru", "test-evidence")
    async with harness.sessions() as session:
        suppression = await session.get(Suppression, subscriber.email_hash)
    assert suppression is not None
    assert (suppression.reason, suppression.lifted_at) == ("hard_bounce", None)


async def test_soft_bounces_score_once_a_day_and_suppress_at_the_threshold(
    harness: Harness,
) -> None:
    subscriber = await add_subscriber(harness)
    assert subscriber.email is not None
    days = [timedelta(0), timedelta(hours=3), timedelta(days=1), timedelta(days=2)]
    for index, offset in enumerate(days, start=1):
        harness.clock.now = T0 + offset
        await publish_and_wait(harness, bounce(subscriber.email, "soft"), count=index)
    rows = await decisions(harness, subscriber.email_hash)
    assert [r.decision for r in rows] == ["scored", "scored", "scored", "suppressed"]
    assert "not counted" in rows[1].reason
    async with harness.sessions() as session:
        score = await session.get(SoftBounceScore, subscriber.email_hash)
        suppression = await session.get(Suppression, subscriber.email_hash)
    assert score is not None
    assert score.score == 3.0
    assert suppression is not None
    assert suppression.reason == "soft_bounce"


async def test_complaint_unsubscribes_and_suppresses(harness: Harness) -> None:
    subscriber = await add_subscriber(harness)
    assert subscriber.email is not None
    await publish_and_wait(harness, bounce(subscriber.email, "complaint"), count=1)
    async with harness.sessions() as session:
        stored = await session.get(Subscriber, subscriber.id)
        suppression = await session.get(Suppression, subscriber.email_hash)
        consent = (
            await session.exec(
                select(ConsentRecord).where(ConsentRecord.subscriber_id == subscriber.id)
            )
        ).one()
    assert stored is not None
    assert stored.status == "unsubscribed"
    assert suppression is not None
    assert suppression.reason == "complaint"
    assert consent.withdrawal_method == "complaint"


async def test_mailto_unsubscribe_withdraws_consent_without_suppressing(harness: Harness) -> None:
    subscriber = await add_subscriber(harness)
    event = UnsubscribeRequested(
        recipient="someone-forwarding@example.net", subscriber_id=subscriber.id
    )
    await harness.publisher.publish_event(event, routing_key=UNSUBSCRIBE_REQUESTED)

    async def unsubscribed() -> bool:
        async with harness.sessions() as session:
            stored = await session.get(Subscriber, subscriber.id)
            return stored is not None and stored.status == "unsubscribed"

    await eventually(unsubscribed)
    async with harness.sessions() as session:
        assert await session.get(Suppression, subscriber.email_hash) is None


async def test_policy_storm_suppresses_nobody_and_alerts_the_dispatchers(
    harness: Harness,
) -> None:
    domain = f"storm-{uuid.uuid4().hex[:8]}.example"
    emails = [f"p{i}@{domain}" for i in range(25)]
    for email in emails:
        await harness.publisher.publish_event(
            bounce(email, "policy", status="5.7.1"), routing_key=BOUNCE_RECEIVED
        )

    async def all_recorded() -> bool:
        async with harness.sessions() as session:
            rows = await session.exec(
                select(BounceDecision).where(BounceDecision.email_domain == domain)
            )
            return len(rows.all()) == len(emails)

    await eventually(all_recorded, timeout=20)
    async with harness.sessions() as session:
        hashes = [address_hash(e) for e in emails]
        suppressed = await session.exec(
            select(Suppression).where(col(Suppression.email_hash).in_(hashes))
        )
        assert suppressed.all() == []
    channel = await harness.connection.channel()
    queue = await channel.get_queue(DISPATCHER_DOMAIN_ALERTS.name)
    alerts: list[DomainPolicyAlerted] = []
    for _ in range(50):
        message = await queue.get(fail=False, timeout=5)
        if message is None:
            if alerts:
                break
            await asyncio.sleep(0.1)
            continue
        await message.ack()
        alert = decode(DomainPolicyAlerted, message.body)
        if alert.domain == domain:
            alerts.append(alert)
    await channel.close()
    assert len(alerts) == 1, "one alert per domain and pause, not one per bounce"
    assert alerts[0].policy_bounces >= 20
    assert alerts[0].threshold == 20


async def test_admin_api_shows_evidence_and_lifts_a_suppression(harness: Harness) -> None:
    subscriber = await add_subscriber(harness)
    assert subscriber.email is not None
    await publish_and_wait(harness, bounce(subscriber.email, "hard", delivery_id=5), count=1)
    app = FastAPI()
    app.state.settings = load_settings(mode="test", admin_token="bounce-admin-token")
    app.state.sessions = harness.sessions
    app.include_router(bounces_routes.router)
    auth = {"Authorization": "Bearer bounce-admin-token"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        path = f"/api/subscribers/{subscriber.id}/bounces"
        assert (await client.get(path)).status_code == 401
        answer = (await client.get(path, headers=auth)).json()
        assert answer["suppression"]["reason"] == "hard_bounce"
        [decision] = answer["decisions"]
        assert (decision["bounce_class"], decision["decision"], decision["delivery_id"]) == (
            "hard",
            "suppressed",
            5,
        )
        assert decision["evidence"] == "test-evidence"
        lift = f"/api/subscribers/{subscriber.id}/suppression/lift"
        lifted = await client.post(lift, json={"note": "typo fixed"}, headers=auth)
        assert lifted.status_code == 200
        assert (await client.post(lift, json={}, headers=auth)).status_code == 404
        after = (await client.get(path, headers=auth)).json()
        assert after["suppression"]["lifted_at"] is not None
        assert after["suppression"]["lift_note"] == "admin: typo fixed"
        # decisions carry the test clock (T0), weeks before now
        domains = (await client.get("/api/bounces/domains?hours=2160", headers=auth)).json()
        assert any(d["domain"] == "example.com" and d["bounce_class"] == "hard" for d in domains)


async def test_an_undecodable_event_is_dead_lettered_not_retried(harness: Harness) -> None:
    marker = uuid.uuid4().hex
    channel = await harness.connection.channel(publisher_confirms=True)
    events = await channel.get_exchange(EVENTS)
    await events.publish(
        aio_pika.Message(body=f'{{"type": "bounce_received", "junk": "{marker}"}}'.encode()),
        routing_key=BOUNCE_RECEIVED,
    )
    dead = await channel.get_queue(DEAD_LETTER_QUEUE)
    found = None
    deadline = asyncio.get_running_loop().time() + 10
    while found is None and asyncio.get_running_loop().time() < deadline:
        message = await dead.get(fail=False, timeout=5)
        if message is None:
            await asyncio.sleep(0.1)
            continue
        if marker.encode() in message.body:
            found = message
            await message.ack()
        else:
            await message.nack(requeue=True)  # someone else's dead letter: leave it there
            await asyncio.sleep(0.05)
    await channel.close()
    assert found is not None, "the poison event did not reach newsletter.dead-letters"
    assert found.headers.get("x-death"), "dead-lettered by the broker, with its history"
