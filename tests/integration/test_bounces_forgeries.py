"""Forgeries and hostile input the takedown tests do not stage, against the running receiver.

Real SMTP over a socket, real HTTP, PostgreSQL and RabbitMQ (``bounces_support``). Each attack
must leave the victim ``active``, publish nothing, and never answer 5xx (a 5xx or a 451 on a
report that will never change makes the sender retry it forever or bounce our bounce).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from sqlmodel import select

from services.bounces.auth import SIGNATURE_HEADER, TIMESTAMP_HEADER
from shared import message_ids, verp
from shared.addresses import address_hash
from shared.db.tables import BounceDecision, Delivery, Subscriber
from tests.integration.bounces_support import (
    DOMAIN,
    POSTMARK_PASSWORD,
    POSTMARK_TOKEN,
    POSTMARK_USER,
    SECRET,
    SENDER_DOMAIN,
    Receiver,
    abuse_report,
    add_delivery,
    add_subscriber,
    decision_for,
    eventually,
    kept_reports,
    receiver,
    return_path,
    send_with_null_sender,
    status_of,
)

pytestmark = pytest.mark.integration
__all__ = ["receiver"]  # the fixture


async def victim_of(r: Receiver) -> tuple[Subscriber, Delivery, str, int]:
    victim = await add_subscriber(r.sessions, "victim")
    delivery = await add_delivery(r.sessions, victim)
    assert victim.email is not None
    assert delivery.id is not None
    return victim, delivery, victim.email, delivery.id


async def assert_untouched(r: Receiver, victim: Subscriber) -> None:
    assert await r.published() == 0, "an event was published"
    assert await status_of(r, victim) == "active"
    assert await decision_for(r, victim.email_hash) is None


def signed(r: Receiver, body: bytes, *, at: float | None = None) -> dict[str, str]:
    return r.sendgrid_headers(body, at=at)


# ---- SendGrid signatures ---------------------------------------------------------------


async def test_forged_sendgrid_signatures_are_401(receiver: Receiver) -> None:
    victim, _, email, delivery_id = await victim_of(receiver)
    events = [{"event": "spamreport", "email": email, "delivery_id": str(delivery_id),
               "sg_event_id": uuid.uuid4().hex}]  # fmt: skip
    body = json.dumps(events).encode()
    stranger = ec.generate_private_key(ec.SECP256R1())
    stamp = str(int(time.time()))
    wrong_key = {
        SIGNATURE_HEADER: base64.b64encode(
            stranger.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        ).decode(),
        TIMESTAMP_HEADER: stamp,
    }
    replayed = signed(receiver, body, at=time.time() - 3600)
    ahead = signed(receiver, body, at=time.time() + 3600)
    genuine = signed(receiver, body)
    altered = body.replace(b"spamreport", b"bounce    ")
    restamped = {**genuine, TIMESTAMP_HEADER: str(int(genuine[TIMESTAMP_HEADER]) - 1)}
    async with httpx.AsyncClient() as http:
        url = f"{receiver.http}/webhooks/sendgrid"
        answers = [
            (await http.post(url, content=body, headers=wrong_key)).status_code,
            (await http.post(url, content=body, headers=replayed)).status_code,
            (await http.post(url, content=body, headers=ahead)).status_code,
            (await http.post(url, content=altered, headers=genuine)).status_code,
            (await http.post(url, content=body + b" ", headers=genuine)).status_code,
            (await http.post(url, content=body, headers=restamped)).status_code,
        ]
    assert answers == [401] * 6
    await assert_untouched(receiver, victim)


# ---- Postmark credentials --------------------------------------------------------------


async def test_postmark_credentials_only_in_the_places_documented(receiver: Receiver) -> None:
    victim, _, email, delivery_id = await victim_of(receiver)
    event = {"RecordType": "SpamComplaint", "Type": "SpamComplaint", "ID": 7, "Email": email,
             "Metadata": {"delivery_id": str(delivery_id)}}  # fmt: skip
    url = f"{receiver.http}/webhooks/postmark"
    async with httpx.AsyncClient() as http:
        refused = [
            await http.post(url, json=event, auth=(POSTMARK_USER + "x", POSTMARK_PASSWORD)),
            await http.post(url, json=event, auth=(POSTMARK_USER, POSTMARK_PASSWORD + "x")),
            await http.post(url, json=event, params={"token": POSTMARK_TOKEN[:-1]}),
            await http.post(url, json=event, params={"token": POSTMARK_TOKEN + "\x00"}),
            await http.post(url, json=event, headers={"X-Webhook-Token": POSTMARK_TOKEN.upper()}),
            await http.post(url, json=event, headers={"Authorization": f"Bearer {POSTMARK_TOKEN}"}),
            await http.post(url, json=event, headers={"Authorization": "Basic !!!"}),
        ]
        assert [a.status_code for a in refused] == [401] * len(refused)
        await assert_untouched(receiver, victim)
        in_header = await http.post(url, json=event, headers={"X-Webhook-Token": POSTMARK_TOKEN})
    assert in_header.json() == {"events": 1}, "the token in a header is as good as in the query"


# ---- SES / SNS certificates ------------------------------------------------------------


@pytest.mark.parametrize(
    "cert_url",
    [
        "https://sns.eu-west-1.amazonaws.com.attacker.example/SimpleNotificationService-x.pem",
        "https://attacker.example/sns.eu-west-1.amazonaws.com/SimpleNotificationService-x.pem",
        "https://sns.eu-west-1.amazonaws.com@attacker.example/SimpleNotificationService-x.pem",
        "http://sns.eu-west-1.amazonaws.com/SimpleNotificationService-test.pem",
        "https://sns.eu-west-1.amazonaws.com\n.attacker.example/x.pem",
        "https://SNS.EU-WEST-1.AMAZONAWS.COM.attacker.example/x.pem",
    ],
)
async def test_sns_with_a_forged_certificate_host_is_refused_unfetched(
    receiver: Receiver, cert_url: str
) -> None:
    victim, _, email, _ = await victim_of(receiver)
    envelope = receiver.sns_envelope(
        {"notificationType": "Complaint", "mail": {"source": return_path(1)},
         "complaint": {"feedbackId": uuid.uuid4().hex,
                       "complainedRecipients": [{"emailAddress": email}]}}
    )  # fmt: skip
    envelope["SigningCertURL"] = cert_url
    async with httpx.AsyncClient() as http:
        answer = await http.post(f"{receiver.http}/webhooks/ses", json=envelope)
    assert answer.status_code == 403, answer.text
    assert cert_url not in receiver.fetched
    await assert_untouched(receiver, victim)


# ---- SMTP: forged proof ----------------------------------------------------------------


def dsn(*, to: str, recipients: list[str], message_id: str = "", extra: str = "") -> bytes:
    blocks = "".join(
        f"Final-Recipient: rfc822; {r}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 <{r}>: User unknown\r\n\r\n"
        for r in recipients
    )
    returned = (
        f"--d\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {message_id}\r\n\r\n"
        if message_id
        else ""
    )
    return (
        f"From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\n{extra}"
        f"To: {to}\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@mx.example.net>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="d"\r\n\r\n'
        "--d\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n\r\n"
        "--d\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; mx.example.net\r\n\r\n{blocks}{returned}--d--\r\n"
    ).encode()


def our_format_with_a_wrong_tag(delivery_id: int) -> str:
    real = message_ids.signed_message_id(
        secret_key=SECRET,
        key=message_ids.delivery_key(delivery_id, "tx.0123abcd"),
        domain=SENDER_DOMAIN,
    )
    local, _, domain = real.strip("<>").partition("@")
    key, _, tag = local.rpartition(".")
    wrong = format(int(tag, 16) ^ 1, "016x")
    return f"<{key}.{wrong}@{domain}>"


async def test_arf_with_our_message_id_format_but_a_wrong_tag_changes_nobody(
    receiver: Receiver,
) -> None:
    victim, _, email, delivery_id = await victim_of(receiver)
    forged = our_format_with_a_wrong_tag(delivery_id)
    for recipient in (email, "[redacted]", ""):
        reply = await send_with_null_sender(
            abuse_report(to=f"abuse@{DOMAIN}", recipient=recipient, message_id=forged),
            recipient=f"abuse@{DOMAIN}",
            port=receiver.smtp_port,
        )
        assert reply.code == 250
    await assert_untouched(receiver, victim)


async def test_a_real_message_id_with_another_recipient_changes_nobody(
    receiver: Receiver,
) -> None:
    """Someone who got one of our mails quotes its Message-ID but names a victim."""
    victim, _, email, _ = await victim_of(receiver)
    attacker = await add_subscriber(receiver.sessions, "mallory")
    theirs = await add_delivery(receiver.sessions, attacker)
    for data in (
        abuse_report(to=f"abuse@{DOMAIN}", recipient=email, message_id=theirs.message_id),
        dsn(to=f"postmaster@{DOMAIN}", recipients=[email], message_id=theirs.message_id),
        # upper-cased Message-ID and a victim with different case: still not the same person
        dsn(
            to=f"postmaster@{DOMAIN}",
            recipients=[email.upper()],
            message_id=theirs.message_id.upper(),
        ),
    ):
        reply = await send_with_null_sender(
            data, recipient=f"postmaster@{DOMAIN}", port=receiver.smtp_port
        )
        assert reply.code == 250
    await assert_untouched(receiver, victim)
    assert await status_of(receiver, attacker) == "active"


async def test_a_verp_dsn_for_delivery_a_naming_b_only_ever_touches_a(receiver: Receiver) -> None:
    victim, _, email, _ = await victim_of(receiver)
    attacker = await add_subscriber(receiver.sessions, "mallory")
    theirs = await add_delivery(receiver.sessions, attacker)
    assert theirs.id is not None
    verp_a = return_path(theirs.id)
    many = [email, *(f"x{i}-{email}" for i in range(300))]
    reply = await send_with_null_sender(
        dsn(to=verp_a, recipients=many), recipient=verp_a, port=receiver.smtp_port
    )
    assert reply.code == 250
    assert await status_of(receiver, victim) == "active"
    assert await decision_for(receiver, victim.email_hash) is None
    # whatever the report names, only A's own address is ever the subject of an event
    published = await receiver.published()
    assert 1 <= published <= 2, published


# ---- SMTP: hostile bytes -----------------------------------------------------------------


@pytest.mark.parametrize(
    "recipient_bytes",
    [
        b"victim@exa\xffmple.com",  # 8-bit garbage in the address
        b"\xc3\x28\xa0\xa1@\xf0\x28\x8c\xbc.example",  # invalid UTF-8
        b"vic\x00tim@example.com",  # a NUL
    ],
)
async def test_8bit_garbage_in_a_role_address_report_is_answered_250(
    receiver: Receiver, recipient_bytes: bytes
) -> None:
    victim, _, email, _ = await victim_of(receiver)
    data = dsn(to=f"bounces@{DOMAIN}", recipients=["PLACEHOLDER@x"])
    data = data.replace(b"PLACEHOLDER@x", recipient_bytes)
    data = data.replace(b"Delivery failed.", b"\x80\x81\xfe garbage \xff\x00 bytes")
    data = data.replace(b"Subject: Undelivered", b"Subject: \xe9\xe8\x00 Undelivered")
    reply = await send_with_null_sender(
        data, recipient=f"bounces@{DOMAIN}", port=receiver.smtp_port
    )
    assert reply.code == 250, reply
    await assert_untouched(receiver, victim)
    assert email  # the victim exists and was not touched


async def test_a_nul_in_the_report_message_id_is_kept_not_451(receiver: Receiver) -> None:
    victim, _, email, _ = await victim_of(receiver)
    data = dsn(to=f"abuse@{DOMAIN}", recipients=[email]).replace(
        b"Message-ID: <", b"Message-ID: <\x00\xff", 1
    )
    reply = await send_with_null_sender(data, recipient=f"abuse@{DOMAIN}", port=receiver.smtp_port)
    assert reply.code == 250, reply
    await assert_untouched(receiver, victim)
    kept = [k for k in await kept_reports(receiver) if k.recipient_hash == address_hash(email)]
    assert [k.status for k in kept] == ["unmatched"]
    assert "\ufffd" in kept[0].evidence, "kept with the NUL replaced, not dropped"


async def test_header_injection_and_oversized_headers_change_nobody(receiver: Receiver) -> None:
    victim, _, email, _ = await victim_of(receiver)
    folded = "X-Padding: " + "\r\n ".join("y" * 900 for _ in range(300)) + "\r\n"
    injected = f"Final-Recipient: rfc822; {email}\r\n X-Injected: {email}\r\n"
    for data in (
        dsn(to=f"bounces@{DOMAIN}", recipients=[email], extra=folded),
        dsn(to=f"bounces@{DOMAIN}", recipients=[f"nobody@example.net\r\n{injected}"]),
        dsn(to=f"bounces@{DOMAIN}", recipients=[f"{email}\r\nReturn-Path: <{email}>"]),
    ):
        reply = await send_with_null_sender(
            data, recipient=f"bounces@{DOMAIN}", port=receiver.smtp_port
        )
        assert reply.code == 250, reply
    await assert_untouched(receiver, victim)


# ---- webhooks: hostile JSON values ---------------------------------------------------------


@pytest.mark.parametrize(
    "claimed",
    [-1, 0, 1.0, 1.5, 1e308, "1e3", "0x10", " -3 ", "\u0661\u0662", True, [1], {"id": 1}, "+1"],
)
async def test_odd_delivery_ids_never_match_and_never_5xx(
    receiver: Receiver, claimed: object
) -> None:
    victim, _, email, _ = await victim_of(receiver)
    events = [{"event": "bounce", "email": email, "delivery_id": claimed, "status": "5.1.1",
               "reason": "550 5.1.1 user unknown", "sg_event_id": uuid.uuid4().hex}]  # fmt: skip
    body = json.dumps(events).encode()
    # A batch this size takes a while on a loaded machine: give it a minute, not httpx's 5 s.
    async with httpx.AsyncClient(timeout=60.0) as http:
        answer = await http.post(
            f"{receiver.http}/webhooks/sendgrid", content=body, headers=signed(receiver, body)
        )
    assert answer.status_code in {200, 400}, answer.text
    await assert_untouched(receiver, victim)


@pytest.mark.parametrize(
    "field",
    ["Email", "ID", "Details", "Type"],
)
async def test_nul_and_lone_surrogates_in_a_webhook_are_not_a_5xx(
    receiver: Receiver, field: str
) -> None:
    victim, _, email, _ = await victim_of(receiver)
    event: dict[str, object] = {
        "RecordType": "Bounce", "Type": "HardBounce", "ID": 5, "Email": email,
        "Details": "550 5.1.1 user unknown",
    }  # fmt: skip
    body = json.dumps(event).encode()
    hostile = b'"a\\u0000b\\ud800c@example.com"'
    body = body.replace(json.dumps(event[field]).encode(), hostile, 1)
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            f"{receiver.http}/webhooks/postmark",
            content=body,
            auth=(POSTMARK_USER, POSTMARK_PASSWORD),
        )
    assert answer.status_code in {200, 400}, answer.text
    await assert_untouched(receiver, victim)


async def test_unicode_lookalikes_of_the_address_do_not_match(receiver: Receiver) -> None:
    subscriber = await add_subscriber(receiver.sessions, "kate")
    delivery = await add_delivery(receiver.sessions, subscriber)
    assert subscriber.email is not None
    assert delivery.id is not None
    lookalikes = [
        "\u212a" + subscriber.email[1:],  # KELVIN SIGN: its lower() is an ASCII "k"
        subscriber.email.replace("a", "\u0430", 1),  # Cyrillic a
        subscriber.email.replace("e", "\u0435", 1),  # Cyrillic e
        subscriber.email + "\u200b",  # zero-width space
    ]
    events = [
        {"event": "bounce", "email": e, "delivery_id": str(delivery.id), "status": "5.1.1",
         "reason": "550 5.1.1 user unknown", "sg_event_id": uuid.uuid4().hex}
        for e in lookalikes
    ]  # fmt: skip
    body = json.dumps(events).encode()
    # A batch this size takes a while on a loaded machine: give it a minute, not httpx's 5 s.
    async with httpx.AsyncClient(timeout=60.0) as http:
        answer = await http.post(
            f"{receiver.http}/webhooks/sendgrid", content=body, headers=signed(receiver, body)
        )
        assert answer.json() == {"events": 0}
        await assert_untouched(receiver, subscriber)
        # the same address in upper case is the same reader (addresses are case-folded)
        genuine = json.dumps(
            [{"event": "bounce", "email": subscriber.email.upper(),
              "delivery_id": str(delivery.id), "status": "5.1.1",
              "reason": "550 5.1.1 user unknown", "sg_event_id": uuid.uuid4().hex}]
        ).encode()  # fmt: skip
        answer = await http.post(
            f"{receiver.http}/webhooks/sendgrid",
            content=genuine,
            headers=signed(receiver, genuine),
        )
    assert answer.json() == {"events": 1}
    hashes = {address_hash(e) for e in lookalikes}
    kept = [k for k in await kept_reports(receiver) if k.recipient_hash in hashes]
    assert len(kept) == len(lookalikes)


async def test_a_large_signed_sendgrid_batch_is_accepted_not_429_forever(
    receiver: Receiver,
) -> None:
    """SendGrid batches events (up to 768 KB a post): a batch bigger than one IP's budget
    per minute would otherwise be refused on every retry until SendGrid drops it."""
    reader = await add_subscriber(receiver.sessions, "reader")
    delivery = await add_delivery(receiver.sessions, reader)
    events = [
        {"event": "deferred", "email": f"other{i}@example.net",
         "sg_event_id": f"batch-{i}", "response": "421 4.7.0 try later"}
        for i in range(receiver.settings.bounces_rate_per_ip + 100)
    ] + [
        {"event": "bounce", "email": reader.email, "delivery_id": str(delivery.id),
         "status": "5.1.1", "reason": "550 5.1.1 user unknown", "sg_event_id": "batch-last"}
    ]  # fmt: skip
    body = json.dumps(events).encode()
    # A batch this size takes a while on a loaded machine: give it a minute, not httpx's 5 s.
    async with httpx.AsyncClient(timeout=60.0) as http:
        answer = await http.post(
            f"{receiver.http}/webhooks/sendgrid", content=body, headers=signed(receiver, body)
        )
        assert answer.status_code == 200, answer.text
        again = await http.post(
            f"{receiver.http}/webhooks/sendgrid", content=body, headers=signed(receiver, body)
        )
    assert answer.json() == {"events": 1}
    assert again.status_code == 429, "the batch used up the minute's budget"


# ---- startup refusal ----------------------------------------------------------------------


@pytest.mark.parametrize("entry", [["-m", "services.bounces"], ["-m", "newsletter_cli.main"]])
def test_production_refusals_are_one_message_not_a_traceback(
    entry: list[str], tmp_path: Path
) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "NEWSLETTER_MODE": "production",
        "NEWSLETTER_SECRET_KEY": "s" * 48,
        "NEWSLETTER_ADMIN_TOKEN": "a" * 40,
        # settings production accepts, so that the webhook credentials are what it refuses
        "NEWSLETTER_PUBLIC_URL": "https://news.digest.test",
        "NEWSLETTER_FROM": "Weekly Digest <digest@news.digest.test>",
    }
    args = [sys.executable, *entry] + (["bounces", "serve"] if "newsletter_cli" in entry[1] else [])
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("error: the bounce receiver's webhooks need credentials")
    assert "NEWSLETTER_BOUNCES_POSTMARK_TOKEN" in done.stderr


# ---- the mailto List-Unsubscribe address ---------------------------------------------------


def unsubscribe_mail(*, sender: str, to: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: {to}\r\nSubject: unsubscribe\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@mua.example>\r\n\r\nunsubscribe\r\n"
    ).encode()


@pytest.mark.parametrize("whose", ["erased", "zero"])
async def test_a_signed_mailto_of_nobody_never_unsubscribes_the_from_address(
    receiver: Receiver, whose: str
) -> None:
    """The signed mailto names a subscriber; the From header is the sender's to choose. A
    mailto whose subscriber is gone (erased), or the ``0`` of a mail sent to no subscriber,
    must not fall back to whoever the From header names."""
    victim, _, email, _ = await victim_of(receiver)
    sid = 0 if whose == "zero" else 2**31 - 17  # no subscriber has this id (erased)
    mailto = verp.unsubscribe_mailto(secret_key=SECRET, subscriber_id=sid, domain=DOMAIN)
    before = await unsubscribe_decisions(receiver)
    reply = await send_with_null_sender(
        unsubscribe_mail(sender=email, to=mailto), recipient=mailto, port=receiver.smtp_port
    )
    assert reply.code == 250, reply
    published = await receiver.published()  # each one is applied (or ignored) with a decision
    await eventually(lambda: at_least(receiver, before + published))
    assert await status_of(receiver, victim) == "active"
    # the subscriber the mailto names is still unsubscribed by it, whatever the From says
    reader = await add_subscriber(receiver.sessions, "reader")
    assert reader.id is not None
    own = verp.unsubscribe_mailto(secret_key=SECRET, subscriber_id=reader.id, domain=DOMAIN)
    reply = await send_with_null_sender(
        unsubscribe_mail(sender="someone-else@example.net", to=own),
        recipient=own,
        port=receiver.smtp_port,
    )
    assert reply.code == 250
    await eventually(lambda: status_is(receiver, reader, "unsubscribed"), timeout=60)


async def unsubscribe_decisions(r: Receiver) -> int:
    async with r.sessions() as session:
        rows = await session.exec(
            select(BounceDecision).where(BounceDecision.bounce_class == "unsubscribe")
        )
        return len(rows.all())


async def at_least(r: Receiver, count: int) -> bool:
    return await unsubscribe_decisions(r) >= count


async def status_is(r: Receiver, subscriber: Subscriber, expected: str) -> bool:
    return await status_of(r, subscriber) == expected
