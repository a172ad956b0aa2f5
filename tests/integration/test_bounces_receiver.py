"""The bounce receiver over real sockets, and the round trip of issue 6.

A test "MTA" (aiosmtpd, via the suite's SMTP sink with a custom handler) accepts every mail
and then, like a real MTA whose next hop refused the address, sends a multipart/report DSN
over SMTP to the message's VERP return path, i.e. to the receiver. The receiver classifies it
and publishes ``bounce.received``; the subscription feedback consumer suppresses the address.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from newsletter_cli.smtp_sink import SmtpSink
from services.bounces import service as receiver_service
from services.bounces.settings import BouncesSettings, load_bounces_settings
from services.bounces.sns import string_to_sign
from services.subscription.feedback.consumer import FeedbackConsumer
from shared import verp
from shared.addresses import address_hash
from shared.db.engine import create_engine, session_factory
from shared.db.tables import BounceDecision, Delivery, Subscriber, Suppression
from shared.messaging.publisher import Publisher
from shared.messaging.schemas import DeliverTransactional
from shared.messaging.topology import DELIVER_TRANSACTIONAL, connect
from shared.settings import Settings

pytestmark = pytest.mark.integration

SECRET = "test-secret-key-" + "x" * 32
DOMAIN = "bounces.example.org"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-test.pem"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dsn_for(*, return_path: str, recipient: str, original: bytes) -> bytes:
    headers = original.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mta.example.net>\r\n"
        f"To: {return_path}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@mta.example.net>\r\n"
        "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="dsn"\r\n\r\n'
        "--dsn\r\nContent-Type: text/plain\r\n\r\n"
        "I'm sorry to have to inform you that your message could not\r\n"
        f"be delivered to one or more recipients.\r\n\r\n<{recipient}>: host mx said: "
        "550 5.1.1 User unknown (in reply to RCPT TO command)\r\n\r\n"
        "--dsn\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mta.example.net\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: Recipient address rejected: "
        "User unknown\r\n\r\n"
        f"--dsn\r\nContent-Type: text/rfc822-headers\r\n\r\n{headers}\r\n\r\n--dsn--\r\n"
    ).encode()


async def send_with_null_sender(data: bytes, *, recipient: str, port: int) -> None:
    """Send as MTAs send DSNs: ``MAIL FROM:<>`` (aiosmtplib.send needs a sender)."""
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=10)
    await client.connect()
    try:
        await client.ehlo()
        await client.mail("")
        await client.rcpt(recipient)
        await client.data(data)
    finally:
        await client.quit()


@dataclass
class BouncingMta:
    """Accepts every mail, then returns a DSN to its envelope sender at ``bounce_port``."""

    bounce_port: int
    received: list[tuple[str, list[str]]] = field(default_factory=list)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        if isinstance(envelope.content, bytes):
            data = envelope.content
        mail_from = str(envelope.mail_from)
        self.received.append((mail_from, list(envelope.rcpt_tos)))
        for rcpt in envelope.rcpt_tos:
            dsn = dsn_for(return_path=mail_from, recipient=rcpt, original=data)
            task = asyncio.get_running_loop().create_task(
                send_with_null_sender(dsn, recipient=mail_from, port=self.bounce_port)
            )
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return "250 2.0.0 OK: queued"


@dataclass
class Running:
    settings: BouncesSettings
    sessions: async_sessionmaker[AsyncSession]
    registry: CollectorRegistry
    mta: BouncingMta
    mta_port: int
    publisher: Publisher
    pem: bytes
    key: rsa.RSAPrivateKey
    fetched: list[str]

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.settings.bounces_http_port}"


def self_signed() -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
async def running(amqp_url: str, sqlite_url: str, tmp_path: Path) -> AsyncIterator[Running]:
    """Receiver + feedback consumer + bouncing MTA, sharing one database and vhost."""
    settings = load_bounces_settings(
        mode="test",
        amqp_url=amqp_url,
        database_url=sqlite_url,
        secret_key=SECRET,
        admin_token="test-admin-token",
        bounce_domain=DOMAIN,
        bounces_smtp_port=free_port(),
        bounces_http_port=free_port(),
        bounces_webhook_token="hook-token",
        var_dir=tmp_path,
    )
    key, pem = self_signed()

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
    engine = create_engine(sqlite_url)
    sessions = session_factory(engine)
    connection = await connect(amqp_url)
    publisher = await Publisher.open(connection)
    consumer = await FeedbackConsumer.start(
        connection=connection, sessions=sessions, publisher=publisher
    )
    mta = BouncingMta(bounce_port=settings.bounces_smtp_port)
    sink = SmtpSink(handler=mta).start()
    try:
        yield Running(settings, sessions, registry, mta, sink.port, publisher, pem, key, fetched)
    finally:
        sink.stop()
        await consumer.stop()
        await publisher.close()
        await connection.close()
        await engine.dispose()
        stop.set()
        await asyncio.wait_for(receiver, 15)


async def add_subscriber(sessions: async_sessionmaker[AsyncSession]) -> Subscriber:
    email = f"gone-{uuid.uuid4().hex[:8]}@example.com"
    async with sessions() as session:
        subscriber = Subscriber(
            email=email,
            email_hash=address_hash(email),
            email_domain="example.com",
            status="active",
        )
        session.add(subscriber)
        await session.commit()
        return subscriber


async def eventually(read: Callable[[], Awaitable[Any]], *, timeout: float = 20.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await read()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


async def decision_for(r: Running, email_hash: str) -> BounceDecision | None:
    async with r.sessions() as session:
        rows = await session.exec(
            select(BounceDecision).where(BounceDecision.email_hash == email_hash)
        )
        return rows.first()


async def test_a_dsn_from_the_mta_suppresses_the_subscriber(running: Running) -> None:
    subscriber = await add_subscriber(running.sessions)
    assert subscriber.email is not None
    async with running.sessions() as session:
        delivery = Delivery(
            dedupe_key=f"tx:{uuid.uuid4().hex}",
            kind="transactional",
            subscriber_id=subscriber.id,
            email=subscriber.email,
            email_domain="example.com",
            language="be",
            status="sent",
        )
        session.add(delivery)
        await session.commit()
    assert delivery.id is not None
    return_path = verp.return_path(secret_key=SECRET, delivery_id=delivery.id, domain=DOMAIN)
    mail = (
        f"From: Weekly Digest <digest@example.org>\r\nTo: {subscriber.email}\r\n"
        "Subject: Weekly Digest\r\nMessage-ID: <issue-1@example.org>\r\n\r\nHello\r\n"
    ).encode()
    await aiosmtplib.send(
        mail,
        sender=return_path,
        recipients=[subscriber.email],
        hostname="127.0.0.1",
        port=running.mta_port,
        timeout=10,
    )
    decision = await eventually(lambda: decision_for(running, subscriber.email_hash))
    assert (decision.bounce_class, decision.decision, decision.source) == (
        "hard",
        "suppressed",
        "smtp",
    )
    assert (decision.delivery_id, decision.language, decision.subscriber_id) == (
        delivery.id,
        "be",
        subscriber.id,
    )
    assert decision.status == "5.1.1"
    assert subscriber.email not in decision.diagnostic  # quoted address kept masked only
    assert "Recipient address rejected" in decision.diagnostic
    assert "mta.example.net" in decision.evidence  # the DSN's Message-ID: where it came from
    archived = Path(decision.evidence.split("file=")[1].split(" ")[0])
    assert b"Final-Recipient: rfc822; " + subscriber.email.encode() in await asyncio.to_thread(
        archived.read_bytes
    )
    async with running.sessions() as session:
        marked = await session.get(Delivery, delivery.id)
    assert marked is not None
    assert marked.status == "bounced"  # the late bounce is on the delivery ledger too
    async with running.sessions() as session:
        suppression = await session.get(Suppression, subscriber.email_hash)
    assert suppression is not None
    assert suppression.reason == "hard_bounce"
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"{running.http}/metrics")).text
    assert (
        'newsletter_bounces_total{class="hard",domain="example.com",language="be"} 1.0' in metrics
    )


async def test_mail_sent_by_the_real_dispatcher_bounces_back_and_suppresses(
    running: Running,
) -> None:
    from services.dispatcher import service as dispatcher_service
    from services.dispatcher.settings import load_dispatcher_settings

    subscriber = await add_subscriber(running.sessions)
    assert subscriber.email is not None
    dispatcher_settings: Settings = load_dispatcher_settings(
        dispatch_retry_tiers="1s",  # a deferred first attempt is retried within the test
        mode="test",
        amqp_url=running.settings.amqp_url,
        database_url=running.settings.database_url,
        secret_key=SECRET,
        admin_token="test-admin-token",
        bounce_domain=DOMAIN,
        smtp_url=f"smtp://127.0.0.1:{running.mta_port}",
        smtp_timeout_s=10,
        var_dir=running.settings.var_dir,
    )
    stop = asyncio.Event()
    dispatcher = asyncio.create_task(
        dispatcher_service.run(
            dispatcher_settings, stop=stop, registry=CollectorRegistry(), serve_probes=False
        )
    )
    try:
        job = DeliverTransactional(
            kind="confirmation",
            language="ru",
            subscriber_id=subscriber.id or 0,
            to=subscriber.email,
            subject="Подтвердите подписку",
            html="<p>Привет</p>",
            text="Привет",
        )
        await running.publisher.publish(job, routing_key=DELIVER_TRANSACTIONAL)
        decision = await eventually(
            lambda: decision_for(running, subscriber.email_hash), timeout=30
        )
    finally:
        stop.set()
        await asyncio.wait_for(dispatcher, 30)
    [(mail_from, _rcpts)] = [m for m in running.mta.received if subscriber.email in m[1]]
    async with running.sessions() as session:
        delivery = (
            await session.exec(
                select(Delivery).where(Delivery.dedupe_key == f"tx:{job.message_id}")
            )
        ).one()
    assert verp.delivery_from_return_path(secret_key=SECRET, address=mail_from) == delivery.id
    assert (decision.bounce_class, decision.decision, decision.delivery_id) == (
        "hard",
        "suppressed",
        delivery.id,
    )
    assert decision.language == "ru"
    async with running.sessions() as session:
        assert await session.get(Suppression, subscriber.email_hash) is not None


async def test_only_our_addresses_are_accepted_and_probes_answer(running: Running) -> None:
    client = aiosmtplib.SMTP(
        hostname="127.0.0.1", port=running.settings.bounces_smtp_port, timeout=10
    )
    await client.connect()
    try:
        await client.ehlo()
        await client.mail("")
        good = verp.return_path(secret_key=SECRET, delivery_id=1, domain=DOMAIN)
        forged = good.replace(good.split("-")[-1].split("@")[0], "0" * 16)
        for refused in (f"someone@{DOMAIN}", forged, "bounces+1-abc@elsewhere.example"):
            with pytest.raises(aiosmtplib.SMTPRecipientRefused):
                await client.rcpt(refused)
        reply = await client.rcpt(good)
        assert reply.code == 250
        assert (await client.rcpt(f"fbl@{DOMAIN}")).code == 250
    finally:
        await client.quit()
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{running.http}/healthz")).status_code == 200
        ready = await http.get(f"{running.http}/readyz")
        assert ready.status_code == 200, ready.text


def sns_envelope(r: Running, message: dict[str, Any]) -> dict[str, str]:
    body = {
        "Type": "Notification",
        "MessageId": uuid.uuid4().hex,
        "TopicArn": "arn:aws:sns:eu-west-1:123456789012:ses-feedback",
        "Message": json.dumps(message),
        "Timestamp": "2026-11-27T07:00:00.000Z",
        "SignatureVersion": "2",
        "SigningCertURL": CERT_URL,
    }
    signature = r.key.sign(string_to_sign(body), padding.PKCS1v15(), hashes.SHA256())
    return {**body, "Signature": base64.b64encode(signature).decode()}


async def test_signed_ses_complaint_unsubscribes_and_a_forged_one_is_refused(
    running: Running,
) -> None:
    subscriber = await add_subscriber(running.sessions)
    complaint = {
        "notificationType": "Complaint",
        "mail": {"source": "digest@example.org", "destination": [subscriber.email]},
        "complaint": {
            "feedbackId": uuid.uuid4().hex,
            "complaintFeedbackType": "abuse",
            "complainedRecipients": [{"emailAddress": subscriber.email}],
        },
    }
    envelope = sns_envelope(running, complaint)
    forged = {**envelope, "Message": envelope["Message"].replace("abuse", "not-spam")}
    async with httpx.AsyncClient() as http:
        refused = await http.post(f"{running.http}/webhooks/ses", json=forged)
        assert refused.status_code == 403
        accepted = await http.post(f"{running.http}/webhooks/ses", json=envelope)
        assert accepted.status_code == 200, accepted.text
        assert accepted.json() == {"events": 1}
        metrics = (await http.get(f"{running.http}/metrics")).text
    decision = await eventually(lambda: decision_for(running, subscriber.email_hash))
    assert (decision.bounce_class, decision.decision, decision.source) == (
        "complaint",
        "unsubscribed",
        "ses",
    )
    async with running.sessions() as session:
        stored = await session.get(Subscriber, subscriber.id)
    assert stored is not None
    assert stored.status == "unsubscribed"
    assert 'newsletter_complaints_total{domain="example.com",language="unknown"}' in metrics


async def test_mailto_unsubscribe_through_the_receiver(running: Running) -> None:
    subscriber = await add_subscriber(running.sessions)
    assert subscriber.id is not None
    mailto = verp.unsubscribe_mailto(secret_key=SECRET, subscriber_id=subscriber.id, domain=DOMAIN)
    mail = f"From: <{subscriber.email}>\r\nTo: {mailto}\r\nSubject: unsubscribe\r\n\r\n".encode()
    await aiosmtplib.send(
        mail,
        sender=subscriber.email,
        recipients=[mailto],
        hostname="127.0.0.1",
        port=running.settings.bounces_smtp_port,
        timeout=10,
    )

    async def unsubscribed() -> bool:
        async with running.sessions() as session:
            stored = await session.get(Subscriber, subscriber.id)
            return stored is not None and stored.status == "unsubscribed"

    await eventually(unsubscribed)
    async with running.sessions() as session:
        assert await session.get(Suppression, subscriber.email_hash) is None  # may re-subscribe


async def test_sns_subscription_is_confirmed_only_when_signed(running: Running) -> None:
    subscribe_url = "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=abc"
    body = {
        "Type": "SubscriptionConfirmation",
        "MessageId": uuid.uuid4().hex,
        "Token": "abc",
        "TopicArn": "arn:aws:sns:eu-west-1:123456789012:ses-feedback",
        "Message": "You have chosen to subscribe to the topic.",
        "SubscribeURL": subscribe_url,
        "Timestamp": "2026-11-27T07:00:00.000Z",
        "SignatureVersion": "2",
        "SigningCertURL": CERT_URL,
    }
    signature = running.key.sign(string_to_sign(body), padding.PKCS1v15(), hashes.SHA256())
    signed = {**body, "Signature": base64.b64encode(signature).decode()}
    evil = {**signed, "SubscribeURL": "https://attacker.example/?Action=ConfirmSubscription"}
    async with httpx.AsyncClient() as http:
        assert (await http.post(f"{running.http}/webhooks/ses", json=evil)).status_code == 403
        answer = await http.post(f"{running.http}/webhooks/ses", json=signed)
    assert answer.status_code == 200, answer.text
    assert running.fetched.count(subscribe_url) == 1
    assert not any("attacker" in url for url in running.fetched)


async def test_sendgrid_webhook_needs_the_token_and_publishes_bounces(running: Running) -> None:
    subscriber = await add_subscriber(running.sessions)
    events = [
        {
            "event": "bounce",
            "type": "bounce",
            "email": subscriber.email,
            "status": "5.1.1",
            "reason": "550 5.1.1 The email account that you tried to reach does not exist",
            "sg_event_id": uuid.uuid4().hex,
        }
    ]
    url = f"{running.http}/webhooks/sendgrid"
    async with httpx.AsyncClient() as http:
        assert (await http.post(url, json=events)).status_code == 401
        assert (await http.post(url + "?token=wrong", json=events)).status_code == 401
        assert (await http.post(url + "?token=hook-token", json={"x": 1})).status_code == 400
        answer = await http.post(url + "?token=hook-token", json=events)
    assert answer.json() == {"events": 1}
    decision = await eventually(lambda: decision_for(running, subscriber.email_hash))
    assert (decision.bounce_class, decision.decision, decision.source) == (
        "hard",
        "suppressed",
        "sendgrid",
    )
