"""Each way issue 11 found to take a reader down from outside is closed.

Against the running receiver (real SMTP over a socket, real HTTP, PostgreSQL, RabbitMQ): every
attempt leaves the victim ``active`` and publishes nothing (a probe queue bound to the events
the receiver publishes stays empty; publishes are confirmed before the receiver answers, so its
count is final once the answer is in). Where it matters, a genuine report right after proves
the probe does count.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import aiosmtplib
import httpx
import pytest

from shared.addresses import address_hash
from shared.db.tables import Delivery, Subscriber
from tests.integration.bounces_support import (
    DOMAIN,
    POSTMARK_PASSWORD,
    POSTMARK_TOKEN,
    POSTMARK_USER,
    Receiver,
    abuse_report,
    add_delivery,
    add_subscriber,
    decision_for,
    kept_reports,
    receiver,
    return_path,
    send_with_null_sender,
    start_receiver,
    status_of,
)

pytestmark = pytest.mark.integration
__all__ = ["receiver"]  # the fixture


async def victim_of(r: Receiver) -> tuple[Subscriber, Delivery]:
    victim = await add_subscriber(r.sessions, "victim")
    return victim, await add_delivery(r.sessions, victim)


async def assert_untouched(r: Receiver, victim: Subscriber) -> None:
    assert await r.published() == 0, "an event was published"
    assert await status_of(r, victim) == "active"
    assert await decision_for(r, victim.email_hash) is None


async def kept_for(r: Receiver, email: str) -> list[str]:
    return [
        f"{k.status}:{k.mailbox}:{k.bounce_class}"
        for k in await kept_reports(r)
        if k.recipient_hash == address_hash(email)
    ]


async def test_unauthenticated_postmark_events_change_nobody(receiver: Receiver) -> None:
    victim, delivery = await victim_of(receiver)
    url = f"{receiver.http}/webhooks/postmark"
    events = [
        {"RecordType": "SpamComplaint", "Type": "SpamComplaint", "ID": 1, "Email": victim.email},
        {"RecordType": "Bounce", "Type": "HardBounce", "ID": 2, "Email": victim.email,
         "Metadata": {"delivery_id": str(delivery.id)}},
        {"RecordType": "Bounce", "Type": "Unsubscribe", "ID": 3, "Email": victim.email},
    ]  # fmt: skip
    async with httpx.AsyncClient() as http:
        for event in events:
            for attempt in (
                {},
                {"auth": (POSTMARK_USER, "wrong")},
                {"params": {"token": "wrong"}},
                {"headers": {"X-Webhook-Token": ""}},
            ):
                answer = await http.post(url, json=event, **attempt)  # type: ignore[arg-type]
                assert answer.status_code == 401, (attempt, answer.text)
        await assert_untouched(receiver, victim)
        # the real credentials, for the victim's own delivery: that one is applied
        genuine = await http.post(url, json=events[1], params={"token": POSTMARK_TOKEN})
    assert genuine.json() == {"events": 1}
    assert await receiver.published() == 1


async def test_unauthenticated_sendgrid_events_change_nobody(receiver: Receiver) -> None:
    victim, delivery = await victim_of(receiver)
    url = f"{receiver.http}/webhooks/sendgrid"
    events = [
        {"event": kind, "email": victim.email, "delivery_id": str(delivery.id),
         "sg_event_id": uuid.uuid4().hex, "status": "5.1.1", "reason": "550 5.1.1 unknown user"}
        for kind in ("spamreport", "bounce", "unsubscribe")
    ]  # fmt: skip
    body = json.dumps(events).encode()
    other = receiver.sendgrid_headers(b"[]")  # a real signature, over another body
    async with httpx.AsyncClient() as http:
        for headers in (
            {},
            {"X-Twilio-Email-Event-Webhook-Signature": "MEUCIQ==", **other},
            {**other, "X-Twilio-Email-Event-Webhook-Timestamp": other[
                "X-Twilio-Email-Event-Webhook-Timestamp"]},
            other,
        ):  # fmt: skip
            answer = await http.post(url, content=body, headers=headers)
            assert answer.status_code == 401, (headers, answer.text)
        for token in ("", "hook-token"):  # the old ?token= no longer opens anything
            answer = await http.post(url, content=body, params={"token": token})
            assert answer.status_code == 401
    await assert_untouched(receiver, victim)


async def test_sendgrid_event_with_an_attackers_address_and_a_guessed_delivery_id(
    receiver: Receiver,
) -> None:
    victim, delivery = await victim_of(receiver)
    attacker = f"mallory-{uuid.uuid4().hex[:6]}@attacker.example"
    events = [
        {"event": kind, "email": attacker, "delivery_id": str(delivery.id),
         "sg_event_id": uuid.uuid4().hex, "type": "bounce", "status": "5.1.1",
         "reason": "550 5.1.1 user unknown"}
        for kind in ("spamreport", "bounce", "unsubscribe")
    ]  # fmt: skip
    body = json.dumps(events).encode()
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            f"{receiver.http}/webhooks/sendgrid",
            content=body,
            headers=receiver.sendgrid_headers(body),
        )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"events": 0}
    await assert_untouched(receiver, victim)
    kept = [k for k in await kept_reports(receiver) if k.recipient_hash == address_hash(attacker)]
    assert len(kept) == 3
    assert {k.reason for k in kept} == {
        "the recipient is not the address of the delivery it quotes"
    }


def dsn(*, to: str, recipient: str) -> bytes:
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\n"
        f"To: {to}\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@mx.example.net>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="d"\r\n\r\n'
        "--d\r\nContent-Type: text/plain\r\n\r\n"
        f"<{recipient}>: 550 5.1.1 User unknown\r\n\r\n"
        "--d\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.net\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: User unknown\r\n\r\n--d--\r\n"
    ).encode()


async def test_arf_to_abuse_naming_a_victim_is_kept_for_ops_and_changes_nobody(
    receiver: Receiver,
) -> None:
    victim, _ = await victim_of(receiver)
    assert victim.email is not None
    reply = await send_with_null_sender(
        abuse_report(to=f"abuse@{DOMAIN}", recipient=victim.email),
        recipient=f"abuse@{DOMAIN}",
        port=receiver.smtp_port,
    )
    assert reply.code == 250
    await assert_untouched(receiver, victim)
    assert await kept_for(receiver, victim.email) == ["unmatched:abuse:complaint"]
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"{receiver.http}/metrics")).text
    assert 'newsletter_bounce_reports_kept_total{source="smtp",status="unmatched"} 1.0' in metrics


@pytest.mark.parametrize("mailbox", ["postmaster", "bounces"])
async def test_a_5_1_1_dsn_to_a_role_address_naming_a_victim_changes_nobody(
    receiver: Receiver, mailbox: str
) -> None:
    victim, delivery = await victim_of(receiver)
    assert victim.email is not None
    reply = await send_with_null_sender(
        dsn(to=f"{mailbox}@{DOMAIN}", recipient=victim.email),
        recipient=f"{mailbox}@{DOMAIN}",
        port=receiver.smtp_port,
    )
    assert reply.code == 250
    await assert_untouched(receiver, victim)
    assert await kept_for(receiver, victim.email) == [f"unmatched:{mailbox}:hard"]
    # The same DSN to the delivery's VERP return path is ours, and is applied.
    assert delivery.id is not None
    verp_address = return_path(delivery.id)
    reply = await send_with_null_sender(
        dsn(to=verp_address, recipient=victim.email),
        recipient=verp_address,
        port=receiver.smtp_port,
    )
    assert reply.code == 250
    assert await receiver.published() == 1


def nested_json(size: int) -> bytes:
    depth = size // 2
    return b"[" * depth + b"]" * depth


async def test_200_kb_of_nested_json_is_refused_with_a_4xx_not_a_500(receiver: Receiver) -> None:
    body = nested_json(200 * 1024)
    wrapped = (
        b'{"RecordType": "Bounce", "Metadata": ' + body[: 100 * 1024] + body[-100 * 1024 :] + b"}"
    )
    async with httpx.AsyncClient() as http:
        answers = [
            await http.post(f"{receiver.http}/webhooks/ses", content=body),
            await http.post(
                f"{receiver.http}/webhooks/postmark",
                content=body,
                auth=(POSTMARK_USER, POSTMARK_PASSWORD),
            ),
            await http.post(
                f"{receiver.http}/webhooks/postmark",
                content=wrapped,
                auth=(POSTMARK_USER, POSTMARK_PASSWORD),
            ),
            await http.post(
                f"{receiver.http}/webhooks/sendgrid",
                content=body,
                headers=receiver.sendgrid_headers(body),
            ),
            await http.post(
                f"{receiver.http}/webhooks/postmark",
                content=nested_json(4 * 1024 * 1024),
                auth=(POSTMARK_USER, POSTMARK_PASSWORD),
            ),
        ]
        assert (await http.get(f"{receiver.http}/healthz")).status_code == 200
    assert [a.status_code for a in answers] == [400, 400, 400, 400, 413]
    assert await receiver.published() == 0


async def test_a_delivery_id_beyond_64_bits_is_a_4xx(receiver: Receiver) -> None:
    victim, _ = await victim_of(receiver)
    huge = 2**64 + 7
    sendgrid = json.dumps(
        [{"event": "spamreport", "email": victim.email, "delivery_id": str(huge),
          "sg_event_id": "x"}]
    ).encode()  # fmt: skip
    postmark = {"RecordType": "SpamComplaint", "Type": "SpamComplaint", "ID": 9,
                "Email": victim.email, "Metadata": {"delivery_id": huge}}  # fmt: skip
    beyond_32_bits = json.dumps(
        [{"event": "spamreport", "email": victim.email, "delivery_id": str(2**40),
          "sg_event_id": "y"}]
    ).encode()  # fmt: skip
    async with httpx.AsyncClient() as http:
        first = await http.post(
            f"{receiver.http}/webhooks/sendgrid",
            content=sendgrid,
            headers=receiver.sendgrid_headers(sendgrid),
        )
        second = await http.post(
            f"{receiver.http}/webhooks/postmark",
            json=postmark,
            auth=(POSTMARK_USER, POSTMARK_PASSWORD),
        )
        third = await http.post(
            f"{receiver.http}/webhooks/sendgrid",
            content=beyond_32_bits,
            headers=receiver.sendgrid_headers(beyond_32_bits),
        )
    assert (first.status_code, second.status_code) == (400, 400)
    assert third.status_code == 200, "in range for the schema, but no such delivery: kept"
    assert third.json() == {"events": 0}
    await assert_untouched(receiver, victim)


def nested_mime(parts: int, *, to: str, recipient: str) -> bytes:
    opening = "".join(
        f'Content-Type: multipart/mixed; boundary="n{i}"\r\n\r\n--n{i}\r\n' for i in range(parts)
    )
    closing = "".join(f"\r\n--n{i}--\r\n" for i in reversed(range(parts)))
    return (
        f"From: MAILER-DAEMON@mx.example.net\r\nTo: {to}\r\nSubject: failure\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@mx.example.net>\r\nMIME-Version: 1.0\r\n{opening}"
        f"Content-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822; {recipient}\r\n"
        f"Action: failed\r\nStatus: 5.1.1\r\n{closing}"
    ).encode()


async def test_5000_nested_mime_parts_are_kept_unreadable_and_answered_250(
    receiver: Receiver,
) -> None:
    victim, _ = await victim_of(receiver)
    assert victim.email is not None
    data = nested_mime(5000, to=f"bounces@{DOMAIN}", recipient=victim.email)
    reply = await send_with_null_sender(
        data, recipient=f"bounces@{DOMAIN}", port=receiver.smtp_port
    )
    assert reply.code == 250, reply
    await assert_untouched(receiver, victim)
    unreadable = [k for k in await kept_reports(receiver) if k.size == len(data)]
    assert [k.status for k in unreadable] == ["unreadable"]
    assert "file=" in unreadable[0].evidence, "archived for a human"
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"{receiver.http}/metrics")).text
    assert 'newsletter_bounce_reports_kept_total{source="smtp",status="unreadable"} 1.0' in metrics


async def test_one_source_is_capped_per_minute(
    amqp_url: str, postgres_url: str, tmp_path: Path
) -> None:
    async with start_receiver(
        amqp_url=amqp_url, database_url=postgres_url, var_dir=tmp_path, bounces_rate_per_ip=3
    ) as r:
        reader, delivery = await victim_of(r)
        answers = []
        async with httpx.AsyncClient() as http:
            for number in range(5):
                event = {"RecordType": "Bounce", "Type": "SoftBounce", "ID": number,
                         "Email": reader.email, "Details": "452 4.2.2 mailbox full",
                         "Metadata": {"delivery_id": str(delivery.id)}}  # fmt: skip
                answer = await http.post(
                    f"{r.http}/webhooks/postmark", json=event, params={"token": POSTMARK_TOKEN}
                )
                answers.append(answer.status_code)
        assert answers == [200, 200, 200, 429, 429]
        assert await r.published() == 3
        assert reader.email is not None
        codes = []
        for _ in range(4):  # the same budget over SMTP, per client IP
            try:
                reply = await send_with_null_sender(
                    abuse_report(to=f"abuse@{DOMAIN}", recipient=reader.email),
                    recipient=f"abuse@{DOMAIN}",
                    port=r.smtp_port,
                )
                codes.append(reply.code)
            except aiosmtplib.SMTPDataError as err:
                codes.append(err.code)
        assert codes == [250, 250, 250, 450]
        assert await r.published() == 3
