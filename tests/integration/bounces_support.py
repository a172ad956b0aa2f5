"""The bounce receiver running for real: its SMTP and HTTP sockets, the database, the broker.

``start_receiver`` runs ``services.bounces.service.run`` with credentials for every provider
(Postmark basic auth and token, a SendGrid ECDSA key pair the tests sign with, an SNS
certificate the tests generate), the subscription service's feedback consumer on the same
database and vhost, and a probe queue bound to the events the receiver publishes, so a test
can tell that nothing was published: every publish is confirmed by the broker before the
receiver answers, so the probe's count is final once the answer is in.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from aio_pika.abc import AbstractChannel, AbstractQueue, AbstractRobustConnection
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from services.bounces import service as receiver_service
from services.bounces.auth import SIGNATURE_HEADER, TIMESTAMP_HEADER
from services.bounces.settings import BouncesSettings, load_bounces_settings
from services.subscription.feedback.consumer import FeedbackConsumer
from shared import message_ids, verp
from shared.addresses import address_hash
from shared.db.engine import create_engine, session_factory
from shared.db.tables import BounceDecision, BounceReport, Delivery, Subscriber
from shared.messaging.publisher import Publisher
from shared.messaging.topology import BOUNCE_RECEIVED, EVENTS, UNSUBSCRIBE_REQUESTED, connect
from tests.support.ports import free_port
from tests.support.sns_signing import CERT_URL, signing_certificate, sns_signed

SECRET = "test-secret-key-" + "x" * 32
DOMAIN = "bounces.example.org"
SENDER_DOMAIN = "example.org"
TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-feedback"
POSTMARK_USER, POSTMARK_PASSWORD = "postmark", "pm-" + "p" * 30
POSTMARK_TOKEN = "pm-token-" + "t" * 30


def sendgrid_key() -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A P-256 key pair; the public half as SendGrid shows it (base64 DER)."""
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, base64.b64encode(der).decode()


@dataclass
class Receiver:
    settings: BouncesSettings
    sessions: async_sessionmaker[AsyncSession]
    registry: CollectorRegistry
    publisher: Publisher
    probe: AbstractQueue
    channel: AbstractChannel
    sns_key: rsa.RSAPrivateKey
    sendgrid_key: ec.EllipticCurvePrivateKey
    fetched: list[str]

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.settings.bounces_http_port}"

    @property
    def smtp_port(self) -> int:
        return self.settings.bounces_smtp_port

    async def published(self) -> int:
        """Events the receiver has published so far (they wait in the probe queue)."""
        # aio-pika caches declared queues: ask the broker itself on the underlying channel.
        underlay = await self.channel.get_underlay_channel()
        declared = await underlay.queue_declare(self.probe.name, passive=True)
        return int(declared.message_count or 0)

    def sendgrid_headers(self, body: bytes, *, at: float | None = None) -> dict[str, str]:
        stamp = str(int(time.time() if at is None else at))
        signature = self.sendgrid_key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            SIGNATURE_HEADER: base64.b64encode(signature).decode(),
            TIMESTAMP_HEADER: stamp,
            "content-type": "application/json",
        }

    def sns_envelope(self, message: dict[str, Any]) -> dict[str, str]:
        body = {
            "Type": "Notification",
            "MessageId": uuid.uuid4().hex,
            "TopicArn": TOPIC,
            "Message": json.dumps(message),
            "Timestamp": "2026-11-27T07:00:00.000Z",
        }
        return sns_signed(self.sns_key, body)


@asynccontextmanager
async def start_receiver(
    *, amqp_url: str, database_url: str, var_dir: Path, **overrides: object
) -> AsyncIterator[Receiver]:
    sg_key, sg_public = sendgrid_key()
    values: dict[str, object] = {
        "mode": "test",
        "amqp_url": amqp_url,
        "database_url": database_url,
        "secret_key": SECRET,
        "admin_token": "test-admin-token",
        "bounce_domain": DOMAIN,
        "bounces_smtp_port": free_port(),
        "bounces_http_port": free_port(),
        "bounces_postmark_basic_auth": f"{POSTMARK_USER}:{POSTMARK_PASSWORD}",
        "bounces_postmark_token": POSTMARK_TOKEN,
        "bounces_sendgrid_public_key": sg_public,
        "bounces_sns_topic_arns": TOPIC,
        "var_dir": var_dir,
    }
    settings = load_bounces_settings(**{**values, **overrides})
    sns_key, pem = signing_certificate()
    fetched: list[str] = []

    async def fetch(url: str) -> bytes:  # certificates and the SNS SubscribeURL
        fetched.append(url)
        return pem if url == CERT_URL else b"<ConfirmSubscriptionResponse/>"

    registry = CollectorRegistry()
    stop, started = asyncio.Event(), asyncio.Event()
    receiver = asyncio.create_task(
        receiver_service.run(
            settings, stop=stop, registry=registry, cert_fetcher=fetch, started=started
        )
    )
    await asyncio.wait_for(started.wait(), 15)
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    connection: AbstractRobustConnection = await connect(amqp_url)
    publisher = await Publisher.open(connection)
    channel: AbstractChannel = await connection.channel()
    probe = await channel.declare_queue(f"test.probe.{uuid.uuid4().hex[:8]}", exclusive=True)
    exchange = await channel.get_exchange(EVENTS)
    for key in (BOUNCE_RECEIVED, UNSUBSCRIBE_REQUESTED):
        await probe.bind(exchange, routing_key=key)
    consumer = await FeedbackConsumer.start(
        connection=connection, sessions=sessions, publisher=publisher
    )
    try:
        yield Receiver(
            settings, sessions, registry, publisher, probe, channel, sns_key, sg_key, fetched
        )
    finally:
        await consumer.stop()
        await channel.close()
        await publisher.close()
        await connection.close()
        await engine.dispose()
        stop.set()
        await asyncio.wait_for(receiver, 15)


@pytest.fixture
async def receiver(amqp_url: str, postgres_url: str, tmp_path: Path) -> AsyncIterator[Receiver]:
    """The receiver on the session's vhost and PostgreSQL database, with its defaults (a test
    module imports this fixture; one that needs other settings calls :func:`start_receiver`)."""
    async with start_receiver(
        amqp_url=amqp_url, database_url=postgres_url, var_dir=tmp_path
    ) as running:
        yield running


async def add_subscriber(
    sessions: async_sessionmaker[AsyncSession], prefix: str = "reader"
) -> Subscriber:
    email = f"{prefix}-{uuid.uuid4().hex[:8]}@example.com"
    async with sessions() as session:
        subscriber = Subscriber(
            email=email, email_hash=address_hash(email), email_domain="example.com", status="active"
        )
        session.add(subscriber)
        await session.commit()
        await session.refresh(subscriber)
        return subscriber


async def add_delivery(
    sessions: async_sessionmaker[AsyncSession], subscriber: Subscriber, *, language: str = "be"
) -> Delivery:
    """A sent delivery, with the signed Message-ID the dispatcher would have given it."""
    assert subscriber.email is not None
    async with sessions() as session:
        delivery = Delivery(
            dedupe_key=f"tx:{uuid.uuid4().hex}",
            kind="transactional",
            subscriber_id=subscriber.id,
            email=subscriber.email,
            email_domain="example.com",
            language=language,
            status="sent",
        )
        session.add(delivery)
        await session.flush()
        assert delivery.id is not None
        delivery.message_id = signed_message_id(delivery.id)
        await session.commit()
        await session.refresh(delivery)
        return delivery


def abuse_report(
    *,
    to: str,
    recipient: str,
    message_id: str = "<d1.abcdef12@example.org>",
    original_mail_from: str = "",
) -> bytes:
    """An ARF abuse report (RFC 5965) to ``to`` about a mail of ours to ``recipient``, quoting
    that mail's ``message_id``, with an Original-Mail-From line if one is given."""
    mail_from = f"Original-Mail-From: {original_mail_from}\r\n" if original_mail_from else ""
    return (
        f"From: abuse-desk@isp.example.net\r\nTo: {to}\r\nSubject: Abuse report\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@isp.example.net>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="arf"\r\n\r\n'
        "--arf\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n\r\n"
        "--arf\r\nContent-Type: message/feedback-report\r\n\r\n"
        f"Feedback-Type: abuse\r\nUser-Agent: ISP-FBL/2.0\r\nVersion: 1\r\n{mail_from}"
        f"Original-Rcpt-To: {recipient}\r\n\r\n"
        "--arf\r\nContent-Type: message/rfc822\r\n\r\n"
        f"From: digest@{SENDER_DOMAIN}\r\nTo: {recipient}\r\nSubject: Weekly\r\n"
        f"Message-ID: {message_id}\r\n\r\nHello\r\n--arf--\r\n"
    ).encode()


def signed_message_id(delivery_id: int) -> str:
    key = message_ids.delivery_key(delivery_id, "tx.0123abcd")
    return message_ids.signed_message_id(secret_key=SECRET, key=key, domain=SENDER_DOMAIN)


def return_path(delivery_id: int) -> str:
    return verp.return_path(secret_key=SECRET, delivery_id=delivery_id, domain=DOMAIN)


async def status_of(r: Receiver, subscriber: Subscriber) -> str:
    async with r.sessions() as session:
        stored = await session.get(Subscriber, subscriber.id)
    assert stored is not None
    return stored.status


async def decision_for(r: Receiver, email_hash: str) -> BounceDecision | None:
    async with r.sessions() as session:
        rows = await session.exec(
            select(BounceDecision).where(BounceDecision.email_hash == email_hash)
        )
        return rows.first()


async def kept_reports(r: Receiver) -> list[BounceReport]:
    async with r.sessions() as session:
        return list((await session.exec(select(BounceReport))).all())


async def eventually(read: Callable[[], Awaitable[Any]], *, timeout: float = 20.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await read()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def send_with_null_sender(
    data: bytes, *, recipient: str, port: int
) -> aiosmtplib.SMTPResponse:
    """Send as MTAs send reports: ``MAIL FROM:<>``; returns the answer to DATA."""
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30)
    await client.connect()
    try:
        await client.ehlo()
        await client.mail("")
        await client.rcpt(recipient)
        return await client.data(data)
    finally:
        await client.quit()
