"""Real mail of ours, returned by a provider's webhook, suppresses exactly its reader.

The real dispatcher sends an edition to an SMTP server over a socket; from what that server
received we build the events Postmark and SendGrid would post back (Postmark copies
``X-PM-Metadata-*`` headers into ``Metadata``; SendGrid copies the ``X-SMTPAPI`` header's
``unique_args`` into each event), and post them, credentials and signature included, to the
running receiver (PostgreSQL, RabbitMQ, the subscription service's feedback consumer).
"""

from __future__ import annotations

import json
import uuid
from email import message_from_bytes
from email.message import Message
from pathlib import Path

import httpx
import pytest

from shared.addresses import address_hash
from tests.integration.bounces_support import (
    POSTMARK_TOKEN,
    Receiver,
    decision_for,
    eventually,
    receiver,
)
from tests.support import dispatch_seed
from tests.support.test_mta import ScriptedMta

pytestmark = pytest.mark.integration
__all__ = ["receiver"]  # the fixture


async def sent_by_the_dispatcher(
    r: Receiver, *, vhost_url: str, postgres_url: str, tmp_path: Path
) -> dict[str, Message]:
    """Three readers get an edition from the real dispatcher; their mail as received."""
    readers = await dispatch_seed.add_subscribers(
        r.sessions, 3, languages=("en",), prefix="provider"
    )
    send_id = str(uuid.uuid4())
    await dispatch_seed.add_editions(r.sessions, send_id, ("en",))
    with ScriptedMta() as mta:
        settings = dispatch_seed.make_settings(
            amqp_url=vhost_url, database_url=postgres_url, smtp_url=mta.url, tmp_path=tmp_path
        )
        async with dispatch_seed.RunningDispatcher(settings):
            await dispatch_seed.plan(vhost_url, send_id, ["en"])
            await dispatch_seed.wait_for_send(r.sessions, send_id)
        received = {a.rcpt: message_from_bytes(a.data) for a in mta.handler.accepted}
    return {reader: received[reader] for reader in readers}


def postmark_bounce(mail: Message, *, email: str) -> dict[str, object]:
    """As Postmark posts it: its own MessageID, our X-PM-Metadata-* headers as Metadata."""
    prefix = "x-pm-metadata-"
    metadata = {k[len(prefix) :]: str(v) for k, v in mail.items() if k.lower().startswith(prefix)}
    return {
        "RecordType": "Bounce", "ID": 4323372036, "Type": "HardBounce", "TypeCode": 1,
        "MessageID": str(uuid.uuid4()), "Email": email, "Tag": "",
        "Description": "The server was unable to deliver your message (ex: unknown user).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Metadata": metadata, "Subject": str(mail["Subject"]),
    }  # fmt: skip


def sendgrid_bounce(mail: Message, *, email: str) -> dict[str, object]:
    """As SendGrid posts it: its own smtp-id and ids, the unique_args as event fields."""
    unique_args = json.loads(str(mail["X-SMTPAPI"]))["unique_args"]
    return {
        "email": email, "timestamp": 1764600000, "smtp-id": f"<{uuid.uuid4().hex}@ismtpd-1>",
        "event": "bounce", "type": "bounce", "bounce_classification": "Invalid Address",
        "sg_event_id": uuid.uuid4().hex, "sg_message_id": f"{uuid.uuid4().hex}.filter0001",
        "reason": "550 5.1.1 The email account that you tried to reach does not exist.",
        "status": "5.1.1", **unique_args,
    }  # fmt: skip


async def test_provider_events_for_our_mail_suppress_exactly_that_reader(
    receiver: Receiver, vhost_url: str, postgres_url: str, tmp_path: Path
) -> None:
    mails = await sent_by_the_dispatcher(
        receiver, vhost_url=vhost_url, postgres_url=postgres_url, tmp_path=tmp_path
    )
    first, second, third = sorted(mails)
    assert "@@NL_" not in str(mails[first]["X-PM-Metadata-delivery_id"])
    async with httpx.AsyncClient() as http:
        # Someone else's reference with the third reader's address, and a forged reference:
        # neither is about the third reader's mail.
        # The forged one differs in its last character, whatever that character is.
        reference = str(mails[third]["X-PM-Metadata-delivery_id"])
        forged = reference[:-1] + ("1" if reference.endswith("0") else "0")
        others = [
            postmark_bounce(mails[first], email=third),
            {**postmark_bounce(mails[third], email=third), "Metadata": {"delivery_id": forged}},
        ]
        for event in others:
            answer = await http.post(
                f"{receiver.http}/webhooks/postmark", json=event, params={"token": POSTMARK_TOKEN}
            )
            assert answer.json() == {"events": 0}, event
        postmark = await http.post(
            f"{receiver.http}/webhooks/postmark",
            json=postmark_bounce(mails[first], email=first.upper()),
            params={"token": POSTMARK_TOKEN},
        )
        body = json.dumps([sendgrid_bounce(mails[second], email=second)]).encode()
        sendgrid = await http.post(
            f"{receiver.http}/webhooks/sendgrid",
            content=body,
            headers=receiver.sendgrid_headers(body),
        )
    assert postmark.json() == {"events": 1}, postmark.text
    assert sendgrid.json() == {"events": 1}, sendgrid.text
    for reader in (first, second):
        decision = await eventually(lambda r=reader: decision_for(receiver, address_hash(r)))
        assert (decision.bounce_class, decision.decision) == ("hard", "suppressed")
    assert await receiver.published() == 2
    assert await decision_for(receiver, address_hash(third)) is None
