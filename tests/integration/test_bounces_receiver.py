"""The bounce receiver over real sockets: the paths that must keep working.

A test "MTA" (aiosmtpd, via the suite's SMTP sink with a custom handler) accepts every mail
and then, like a real MTA whose next hop refused the address, sends a multipart/report DSN
over SMTP to the message's VERP return path, i.e. to the receiver. The receiver classifies it
and publishes ``bounce.received``; the subscription feedback consumer suppresses the address.
Authenticated webhooks for a real delivery of ours, and a complaint that names nobody but
returns our signed Message-ID, reach the right reader too.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from prometheus_client import CollectorRegistry
from sqlmodel import select

from newsletter_cli.smtp_sink import SmtpSink
from shared import verp
from shared.db.tables import Delivery, Suppression
from shared.messaging.schemas import DeliverTransactional
from shared.messaging.topology import DELIVER_TRANSACTIONAL
from shared.settings import Settings
from tests.integration.bounces_support import (
    DOMAIN,
    POSTMARK_PASSWORD,
    POSTMARK_USER,
    SECRET,
    TOPIC,
    Receiver,
    add_delivery,
    add_subscriber,
    decision_for,
    eventually,
    return_path,
    send_with_null_sender,
    start_receiver,
    status_of,
)
from tests.support.ports import free_port
from tests.support.sns_signing import sns_signed

pytestmark = pytest.mark.integration


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
    r: Receiver
    mta: BouncingMta
    mta_port: int


@pytest.fixture
async def running(amqp_url: str, sqlite_url: str, tmp_path: Path) -> AsyncIterator[Running]:
    """Receiver + feedback consumer + bouncing MTA, sharing one database and vhost."""
    async with start_receiver(
        amqp_url=amqp_url, database_url=sqlite_url, var_dir=tmp_path
    ) as receiver:
        mta = BouncingMta(bounce_port=receiver.smtp_port)
        sink = SmtpSink(port=free_port(), handler=mta).start()
        try:
            yield Running(receiver, mta, sink.port)
        finally:
            sink.stop()


async def test_a_dsn_from_the_mta_suppresses_the_subscriber(running: Running) -> None:
    r = running.r
    subscriber = await add_subscriber(r.sessions, "gone")
    assert subscriber.email is not None
    delivery = await add_delivery(r.sessions, subscriber)
    assert delivery.id is not None
    mail = (
        f"From: Weekly Digest <digest@example.org>\r\nTo: {subscriber.email}\r\n"
        f"Subject: Weekly Digest\r\nMessage-ID: {delivery.message_id}\r\n\r\nHello\r\n"
    ).encode()
    await aiosmtplib.send(
        mail,
        sender=return_path(delivery.id),
        recipients=[subscriber.email],
        hostname="127.0.0.1",
        port=running.mta_port,
        timeout=10,
    )
    decision = await eventually(lambda: decision_for(r, subscriber.email_hash))
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
    async with r.sessions() as session:
        marked = await session.get(Delivery, delivery.id)
        suppression = await session.get(Suppression, subscriber.email_hash)
    assert marked is not None
    assert marked.status == "bounced"  # the late bounce is on the delivery ledger too
    assert suppression is not None
    assert suppression.reason == "hard_bounce"
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"{r.http}/metrics")).text
    assert (
        'newsletter_bounces_total{class="hard",domain="example.com",language="be"} 1.0' in metrics
    )


async def test_mail_sent_by_the_real_dispatcher_bounces_back_and_suppresses(
    running: Running,
) -> None:
    from services.dispatcher import service as dispatcher_service
    from services.dispatcher.settings import load_dispatcher_settings

    r = running.r
    subscriber = await add_subscriber(r.sessions, "gone")
    assert subscriber.email is not None
    dispatcher_settings: Settings = load_dispatcher_settings(
        dispatch_retry_tiers="1s",  # a deferred first attempt is retried within the test
        mode="test",
        amqp_url=r.settings.amqp_url,
        database_url=r.settings.database_url,
        secret_key=SECRET,
        admin_token="test-admin-token",
        bounce_domain=DOMAIN,
        smtp_url=f"smtp://127.0.0.1:{running.mta_port}",
        smtp_timeout_s=10,
        var_dir=r.settings.var_dir,
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
        await r.publisher.publish(job, routing_key=DELIVER_TRANSACTIONAL)
        decision = await eventually(lambda: decision_for(r, subscriber.email_hash), timeout=30)
    finally:
        stop.set()
        await asyncio.wait_for(dispatcher, 30)
    [(mail_from, _rcpts)] = [m for m in running.mta.received if subscriber.email in m[1]]
    async with r.sessions() as session:
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
    from shared import message_ids

    assert (
        message_ids.delivery_from_message_id(secret_key=SECRET, message_id=delivery.message_id)
        == delivery.id
    ), "the dispatcher's Message-ID is signed and names the delivery"
    async with r.sessions() as session:
        assert await session.get(Suppression, subscriber.email_hash) is not None


async def test_only_our_addresses_are_accepted_and_probes_answer(running: Running) -> None:
    r = running.r
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=r.smtp_port, timeout=10)
    await client.connect()
    try:
        await client.ehlo()
        await client.mail("")
        good = return_path(1)
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
        assert (await http.get(f"{r.http}/healthz")).status_code == 200
        ready = await http.get(f"{r.http}/readyz")
        assert ready.status_code == 200, ready.text


async def test_signed_ses_complaint_unsubscribes_and_a_forged_one_is_refused(
    running: Running,
) -> None:
    r = running.r
    subscriber = await add_subscriber(r.sessions)
    delivery = await add_delivery(r.sessions, subscriber)
    assert delivery.id is not None
    complaint = {
        "notificationType": "Complaint",
        "mail": {"source": return_path(delivery.id), "destination": [subscriber.email]},
        "complaint": {
            "feedbackId": uuid.uuid4().hex,
            "complaintFeedbackType": "abuse",
            "complainedRecipients": [{"emailAddress": subscriber.email}],
        },
    }
    envelope = r.sns_envelope(complaint)
    forged = {**envelope, "Message": envelope["Message"].replace("abuse", "not-spam")}
    foreign = r.sns_envelope(complaint)
    async with httpx.AsyncClient() as http:
        refused = await http.post(f"{r.http}/webhooks/ses", json=forged)
        assert refused.status_code == 403
        accepted = await http.post(f"{r.http}/webhooks/ses", json=envelope)
        assert accepted.status_code == 200, accepted.text
        assert accepted.json() == {"events": 1}
        body = sns_signed(r.sns_key, {**foreign, "TopicArn": TOPIC + "-other"})
        other = await http.post(f"{r.http}/webhooks/ses", json=body)
        assert other.status_code == 403, "a topic that is not ours is refused, signed or not"
        metrics = (await http.get(f"{r.http}/metrics")).text
    decision = await eventually(lambda: decision_for(r, subscriber.email_hash))
    assert (decision.bounce_class, decision.decision, decision.source) == (
        "complaint",
        "unsubscribed",
        "ses",
    )
    assert await status_of(r, subscriber) == "unsubscribed"
    assert 'newsletter_complaints_total{domain="example.com",language="be"}' in metrics


async def test_mailto_unsubscribe_through_the_receiver(running: Running) -> None:
    r = running.r
    subscriber = await add_subscriber(r.sessions)
    assert subscriber.id is not None
    assert subscriber.email is not None
    mailto = verp.unsubscribe_mailto(secret_key=SECRET, subscriber_id=subscriber.id, domain=DOMAIN)
    mail = f"From: <{subscriber.email}>\r\nTo: {mailto}\r\nSubject: unsubscribe\r\n\r\n".encode()
    await aiosmtplib.send(
        mail,
        sender=subscriber.email,
        recipients=[mailto],
        hostname="127.0.0.1",
        port=r.smtp_port,
        timeout=10,
    )

    async def unsubscribed() -> bool:
        return await status_of(r, subscriber) == "unsubscribed"

    await eventually(unsubscribed)
    async with r.sessions() as session:
        assert await session.get(Suppression, subscriber.email_hash) is None  # may re-subscribe


async def test_sns_subscription_is_confirmed_only_when_signed(running: Running) -> None:
    r = running.r
    subscribe_url = "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=abc"
    body = {
        "Type": "SubscriptionConfirmation",
        "MessageId": uuid.uuid4().hex,
        "Token": "abc",
        "TopicArn": TOPIC,
        "Message": "You have chosen to subscribe to the topic.",
        "SubscribeURL": subscribe_url,
        "Timestamp": "2026-11-27T07:00:00.000Z",
    }
    signed = sns_signed(r.sns_key, body)
    evil = {**signed, "SubscribeURL": "https://attacker.example/?Action=ConfirmSubscription"}
    async with httpx.AsyncClient() as http:
        assert (await http.post(f"{r.http}/webhooks/ses", json=evil)).status_code == 403
        answer = await http.post(f"{r.http}/webhooks/ses", json=signed)
    assert answer.status_code == 200, answer.text
    assert r.fetched.count(subscribe_url) == 1
    assert not any("attacker" in url for url in r.fetched)


async def test_a_signed_sendgrid_bounce_for_a_delivery_of_ours_suppresses_that_reader(
    running: Running,
) -> None:
    r = running.r
    subscriber = await add_subscriber(r.sessions, "gone")
    delivery = await add_delivery(r.sessions, subscriber)
    events = [
        {
            "event": "bounce",
            "type": "bounce",
            "email": subscriber.email,
            "status": "5.1.1",
            "reason": "550 5.1.1 The email account that you tried to reach does not exist",
            "sg_event_id": uuid.uuid4().hex,
            "smtp-id": delivery.message_id,
        }
    ]
    body = json.dumps(events).encode()
    url = f"{r.http}/webhooks/sendgrid"
    async with httpx.AsyncClient() as http:
        stale = r.sendgrid_headers(body, at=1_000_000_000)
        assert (await http.post(url, content=body, headers=stale)).status_code == 401
        not_a_list = b'{"x": 1}'
        answer = await http.post(url, content=not_a_list, headers=r.sendgrid_headers(not_a_list))
        assert answer.status_code == 400
        answer = await http.post(url, content=body, headers=r.sendgrid_headers(body))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"events": 1}
    decision = await eventually(lambda: decision_for(r, subscriber.email_hash))
    assert (decision.bounce_class, decision.decision, decision.source) == (
        "hard",
        "suppressed",
        "sendgrid",
    )
    assert decision.delivery_id == delivery.id


async def test_a_postmark_bounce_with_basic_auth_and_our_delivery_id_suppresses(
    running: Running,
) -> None:
    r = running.r
    subscriber = await add_subscriber(r.sessions, "gone")
    delivery = await add_delivery(r.sessions, subscriber)
    body = {
        "RecordType": "Bounce",
        "Type": "HardBounce",
        "ID": 4323372036854775807,
        "Email": subscriber.email,
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Metadata": {"delivery_id": str(delivery.id)},
    }
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            f"{r.http}/webhooks/postmark", json=body, auth=(POSTMARK_USER, POSTMARK_PASSWORD)
        )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"events": 1}
    decision = await eventually(lambda: decision_for(r, subscriber.email_hash))
    assert (decision.bounce_class, decision.decision, decision.delivery_id) == (
        "hard",
        "suppressed",
        delivery.id,
    )


def complaint_without_recipient(*, to: str, original_message_id: str) -> bytes:
    """An ARF report whose provider redacted the recipient, returning our headers."""
    return (
        f"From: Feedback Loop <fbl@feedback.example.net>\r\nTo: {to}\r\n"
        "Subject: Complaint about a message\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@feedback.example.net>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="arf"\r\n\r\n'
        "--arf\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n\r\n"
        "--arf\r\nContent-Type: message/feedback-report\r\n\r\n"
        "Feedback-Type: abuse\r\nUser-Agent: ExampleFBL/1.0\r\nVersion: 1\r\n"
        "Source-IP: 192.0.2.1\r\n\r\n"
        "--arf\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        "From: Weekly Digest <digest@example.org>\r\nTo: redacted\r\n"
        f"Subject: Weekly Digest\r\nMessage-ID: {original_message_id}\r\n"
        "List-Id: Weekly Digest <weekly-digest.example.org>\r\n\r\n--arf--\r\n"
    ).encode()


async def test_a_complaint_naming_nobody_finds_the_reader_through_our_message_id(
    running: Running,
) -> None:
    r = running.r
    subscriber = await add_subscriber(r.sessions)
    bystander = await add_subscriber(r.sessions)
    delivery = await add_delivery(r.sessions, subscriber)
    data = complaint_without_recipient(
        to=f"abuse@{DOMAIN}", original_message_id=delivery.message_id
    )
    reply = await send_with_null_sender(data, recipient=f"abuse@{DOMAIN}", port=r.smtp_port)
    assert reply.code == 250, reply
    decision = await eventually(lambda: decision_for(r, subscriber.email_hash))
    assert (decision.bounce_class, decision.decision, decision.delivery_id) == (
        "complaint",
        "unsubscribed",
        delivery.id,
    )
    assert await status_of(r, subscriber) == "unsubscribed"
    assert await status_of(r, bystander) == "active"
