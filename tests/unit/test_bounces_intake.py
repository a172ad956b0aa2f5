"""The intake turns reports into events: VERP beats the report, ids are stable, outages surface."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from services.bounces.errors import IntakeUnavailable
from services.bounces.imap import poll_once
from services.bounces.intake import BounceIntake, DeliveryInfo
from services.bounces.metrics import BounceMetrics
from services.bounces.providers import (
    postmark_notices,
    sendgrid_notices,
    ses_notices,
)
from shared import verp
from shared.messaging.publisher import PublishError
from shared.messaging.schemas import BounceReceived, Message, UnsubscribeRequested

SECRET = "test-secret-key-" + "x" * 32
CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "bounces"


class FakePublisher:
    def __init__(self, *, fail: bool = False) -> None:
        self.events: list[tuple[str, Message]] = []
        self.fail = fail

    async def publish_event(self, message: Message, *, routing_key: str) -> None:
        if self.fail:
            raise PublishError("broker down")
        self.events.append((routing_key, message))


def dsn_to(return_path: str, recipient: str) -> bytes:
    return (
        f"From: MAILER-DAEMON@mx.example.net\r\nTo: {return_path}\r\nSubject: failure\r\n"
        "Message-ID: <dsn-77@mx.example.net>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n--b--\r\n"
    ).encode()


async def test_verp_delivery_supplies_address_and_language_and_metrics_count() -> None:
    publisher = FakePublisher()
    registry = CollectorRegistry()

    async def lookup(delivery_id: int) -> DeliveryInfo | None:
        assert delivery_id == 17
        return DeliveryInfo(email="Real.Reader@example.com", language="be", subscriber_id=5)

    intake = BounceIntake(
        publisher=publisher, secret_key=SECRET, metrics=BounceMetrics(registry), lookup=lookup
    )
    rp = verp.return_path(secret_key=SECRET, delivery_id=17, domain="lists.example.org")
    # The report names a forwarding address; the VERP token names the delivery we made.
    [event] = await intake.handle_mail(dsn_to(rp, "forwarded@elsewhere.example"), envelope_to=[rp])
    assert isinstance(event, BounceReceived)
    assert (event.recipient, event.language, event.delivery_id, event.bounce_class) == (
        "Real.Reader@example.com",
        "be",
        17,
        "hard",
    )
    assert publisher.events[0][0] == "bounce.received"
    value = registry.get_sample_value(
        "newsletter_bounces_total", {"class": "hard", "language": "be", "domain": "example.com"}
    )
    assert value == 1.0


async def test_the_same_report_twice_gives_the_same_event_id() -> None:
    publisher = FakePublisher()
    intake = BounceIntake(publisher=publisher, secret_key=SECRET)
    data = (CORPUS / "working/handmade/hard_dsn_generic_status.eml").read_bytes()
    first = await intake.handle_mail(data)
    second = await intake.handle_mail(data)
    assert [e.message_id for e in first] == [e.message_id for e in second]


async def test_mail_to_the_unsubscribe_address_becomes_an_unsubscribe_request() -> None:
    publisher = FakePublisher()
    intake = BounceIntake(publisher=publisher, secret_key=SECRET)
    mailto = verp.unsubscribe_mailto(
        secret_key=SECRET, subscriber_id=99, domain="lists.example.org"
    )
    data = f"From: Reader <reader@example.com>\r\nTo: {mailto}\r\nSubject: stop\r\n\r\n".encode()
    [event] = await intake.handle_mail(data, envelope_to=[mailto])
    assert isinstance(event, UnsubscribeRequested)
    assert (event.subscriber_id, event.recipient, event.method) == (
        99,
        "reader@example.com",
        "mailto",
    )
    assert publisher.events[0][0] == "unsubscribe.requested"


async def test_a_broker_outage_is_reported_so_the_sender_retries() -> None:
    intake = BounceIntake(publisher=FakePublisher(fail=True), secret_key=SECRET)
    with pytest.raises(IntakeUnavailable):
        await intake.handle_mail(
            (CORPUS / "working/handmade/hard_dsn_generic_status.eml").read_bytes()
        )


def test_ses_bounce_and_complaint_are_read() -> None:
    rp = verp.return_path(secret_key=SECRET, delivery_id=8, domain="lists.example.org")
    bounce = {
        "notificationType": "Bounce",
        "mail": {"source": rp},
        "bounce": {
            "bounceType": "Permanent",
            "bounceSubType": "General",
            "feedbackId": "fb-1",
            "bouncedRecipients": [
                {
                    "emailAddress": "gone@example.com",
                    "status": "5.1.1",
                    "action": "failed",
                    "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                }
            ],
        },
    }
    [notice] = ses_notices(bounce, secret_key=SECRET)
    assert (notice.finding.bounce_class, notice.finding.delivery_id) == ("hard", 8)
    full = json.loads(json.dumps(bounce))
    full["bounce"].update(bounceType="Transient", bounceSubType="MailboxFull")
    assert ses_notices(full, secret_key=SECRET)[0].finding.bounce_class == "soft"
    complaint = {
        "notificationType": "Complaint",
        "mail": {"source": "x@example.org"},
        "complaint": {
            "feedbackId": "c-1",
            "complainedRecipients": [{"emailAddress": "a@example.com"}],
        },
    }
    assert ses_notices(complaint, secret_key=SECRET)[0].finding.bounce_class == "complaint"


def test_postmark_and_sendgrid_types_map_to_classes() -> None:
    assert (
        postmark_notices(
            {"RecordType": "Bounce", "Type": "HardBounce", "Email": "a@example.com", "ID": 1}
        )[0].finding.bounce_class
        == "hard"
    )
    assert (
        postmark_notices(
            {"RecordType": "Bounce", "Type": "DMARCPolicy", "Email": "a@example.com", "ID": 2}
        )[0].finding.bounce_class
        == "policy"
    )
    assert (
        postmark_notices(
            {
                "RecordType": "SpamComplaint",
                "Type": "SpamComplaint",
                "Email": "a@example.com",
                "ID": 3,
            }
        )[0].finding.bounce_class
        == "complaint"
    )
    events = [
        {
            "event": "bounce",
            "type": "bounce",
            "email": "a@example.com",
            "status": "5.1.1",
            "reason": "550 5.1.1 no such user",
            "sg_event_id": "e1",
            "delivery_id": "12",
        },
        {
            "event": "bounce",
            "type": "blocked",
            "email": "b@example.com",
            "status": "5.7.1",
            "reason": "550 5.7.1 blocked by policy",
            "sg_event_id": "e2",
        },
        {"event": "spamreport", "email": "c@example.com", "sg_event_id": "e3"},
        {
            "event": "deferred",
            "email": "d@example.com",
            "response": "451 4.7.1 try later",
            "sg_event_id": "e4",
        },
        {"event": "unsubscribe", "email": "e@example.com", "sg_event_id": "e5"},
        {"event": "open", "email": "f@example.com", "sg_event_id": "e6"},
    ]
    notices = sendgrid_notices(events)
    assert [(n.finding.bounce_class, n.unsubscribe) for n in notices] == [
        ("hard", False),
        ("policy", False),
        ("complaint", False),
        ("delayed", False),
        ("unknown", True),
    ]
    assert notices[0].finding.delivery_id == 12


class FakeMailbox:
    def __init__(self, messages: dict[str, bytes]) -> None:
        self.messages = messages
        self.seen: list[str] = []
        self.logged_out = False

    def select(self, mailbox: str = "INBOX") -> tuple[str, list[bytes | None]]:
        return "OK", [b"1"]

    def search(self, charset: str | None, *criteria: str) -> tuple[str, list[bytes | None]]:
        return "OK", [" ".join(self.messages).encode()]

    def fetch(self, message_set: str, message_parts: str) -> tuple[str, list[object]]:
        return "OK", [(b"1 (BODY[] {10}", self.messages[message_set]), b")"]

    def store(self, message_set: str, command: str, flags: str) -> tuple[str, list[object]]:
        self.seen.append(message_set)
        return "OK", []

    def logout(self) -> tuple[str, list[bytes | None]]:
        self.logged_out = True
        return "BYE", []


async def test_imap_polling_marks_messages_seen_only_after_publishing() -> None:
    box = FakeMailbox({"1": (CORPUS / "working/handmade/hard_dsn_generic_status.eml").read_bytes()})
    publisher = FakePublisher()
    intake = BounceIntake(publisher=publisher, secret_key=SECRET)
    assert await poll_once(intake=intake, connect=lambda: box, mailbox="INBOX") == 1
    assert box.seen == ["1"]
    assert box.logged_out
    assert publisher.events[0][1].source == "imap"  # type: ignore[attr-defined]

    failing = FakeMailbox(
        {"2": (CORPUS / "working/handmade/hard_dsn_generic_status.eml").read_bytes()}
    )
    down = BounceIntake(publisher=FakePublisher(fail=True), secret_key=SECRET)
    assert await poll_once(intake=down, connect=lambda: failing, mailbox="INBOX") == 0
    assert failing.seen == []


async def test_one_report_read_over_smtp_and_imap_is_one_event() -> None:
    publisher = FakePublisher()
    intake = BounceIntake(publisher=publisher, secret_key=SECRET)
    data = (CORPUS / "working/handmade/hard_dsn_generic_status.eml").read_bytes()
    [smtp] = await intake.handle_mail(data, source="smtp")
    [imap] = await intake.handle_mail(data, source="imap")
    assert smtp.message_id == imap.message_id


def test_archived_reports_older_than_the_retention_are_pruned(tmp_path: Path) -> None:
    import os

    from services.bounces.intake import archive_report, prune_archive

    old = archive_report(tmp_path, b"old report")
    new = archive_report(tmp_path, b"new report")
    os.utime(old, (1_000_000, 1_000_000))
    assert prune_archive(tmp_path, keep_days=30) == 1
    assert not old.exists()
    assert new.read_bytes() == b"new report"


async def test_an_unwritable_archive_does_not_lose_the_bounce(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the archive folder should be")
    publisher = FakePublisher()
    intake = BounceIntake(publisher=publisher, secret_key=SECRET, archive_dir=blocker)
    [event] = await intake.handle_mail(
        (CORPUS / "working/handmade/hard_dsn_generic_status.eml").read_bytes()
    )
    assert isinstance(event, BounceReceived)
    assert "file=" not in event.evidence


async def test_the_receiver_answers_451_when_the_intake_fails_so_the_mta_retries() -> None:
    from aiosmtpd.smtp import Envelope

    from services.bounces.smtp_receiver import ReturnPathHandler

    async def broken_lookup(_: int) -> DeliveryInfo | None:
        raise ConnectionError("database down")

    rp = verp.return_path(secret_key=SECRET, delivery_id=3, domain="lists.example.org")
    envelope = Envelope()
    envelope.rcpt_tos = [rp]
    envelope.content = dsn_to(rp, "gone@example.com")
    for intake in (
        BounceIntake(publisher=FakePublisher(), secret_key=SECRET, lookup=broken_lookup),
        BounceIntake(publisher=FakePublisher(fail=True), secret_key=SECRET),
    ):
        handler = ReturnPathHandler(
            intake=intake,
            secret_key=SECRET,
            domain="lists.example.org",
            accept_locals=frozenset(),
        )
        reply = await handler.handle_DATA(None, None, envelope)  # type: ignore[arg-type]
        assert reply.startswith("451 ")
