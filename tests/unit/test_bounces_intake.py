"""The intake turns reports into events only for deliveries of ours; the rest is kept, unused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from services.bounces.errors import IntakeUnavailable, WebhookRejected
from services.bounces.imap import poll_once
from services.bounces.intake import BounceIntake, DeliveryInfo, KeptReport
from services.bounces.metrics import BounceMetrics
from services.bounces.providers import postmark_notices, sendgrid_notices, ses_notices
from shared import message_ids, verp
from shared.messaging.publisher import PublishError
from shared.messaging.schemas import BounceReceived, Message, UnsubscribeRequested

SECRET = "test-secret-key-" + "x" * 32
DOMAIN = "lists.example.org"
READER = "Real.Reader@example.com"


class FakePublisher:
    def __init__(self, *, fail: bool = False) -> None:
        self.events: list[tuple[str, Message]] = []
        self.fail = fail

    async def publish_event(self, message: Message, *, routing_key: str) -> None:
        if self.fail:
            raise PublishError("broker down")
        self.events.append((routing_key, message))


class Ledger:
    """Deliveries by id, as the receiver's look-up returns them."""

    def __init__(self, **deliveries: str) -> None:
        self.rows = {int(k.removeprefix("d")): v for k, v in deliveries.items()}

    async def __call__(self, delivery_id: int) -> DeliveryInfo | None:
        email = self.rows.get(delivery_id)
        return None if email is None else DeliveryInfo(email, "be", 5)


class Kept:
    def __init__(self) -> None:
        self.reports: list[KeptReport] = []

    async def __call__(self, report: KeptReport) -> None:
        self.reports.append(report)


def intake(
    publisher: FakePublisher,
    *,
    ledger: Ledger | None = None,
    kept: Kept | None = None,
    **kw: object,
) -> BounceIntake:
    return BounceIntake(
        publisher=publisher,
        secret_key=SECRET,
        lookup=ledger or Ledger(d17=READER),
        keeper=kept or Kept(),
        **kw,  # type: ignore[arg-type]
    )


def dsn_to(to: str, recipient: str, *, returned: str = "") -> bytes:
    return (
        f"From: MAILER-DAEMON@mx.example.net\r\nTo: {to}\r\nSubject: failure\r\n"
        "Message-ID: <dsn-77@mx.example.net>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        f"--b\r\nContent-Type: text/rfc822-headers\r\n\r\n{returned}\r\n--b--\r\n"
    ).encode()


def arf_to(to: str, *, recipient: str, original_message_id: str) -> bytes:
    rcpt = f"Original-Rcpt-To: {recipient}\r\n" if recipient else ""
    return (
        f"From: feedback@fbl.example.net\r\nTo: {to}\r\nSubject: complaint\r\n"
        "Message-ID: <arf-1@fbl.example.net>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="f"\r\n\r\n'
        "--f\r\nContent-Type: text/plain\r\n\r\nA complaint about a message.\r\n"
        "--f\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\n"
        f"User-Agent: fbl/1.0\r\nVersion: 1\r\n{rcpt}\r\n"
        "--f\r\nContent-Type: message/rfc822\r\n\r\n"
        "From: digest@example.org\r\nTo: [redacted]\r\n"
        f"Message-ID: {original_message_id}\r\nSubject: Weekly\r\n\r\nHello\r\n--f--\r\n"
    ).encode()


def our_message_id(delivery_id: int) -> str:
    key = message_ids.delivery_key(delivery_id, "abcdef12")
    return message_ids.signed_message_id(secret_key=SECRET, key=key, domain="example.org")


async def test_verp_delivery_supplies_address_and_language_and_metrics_count() -> None:
    publisher, registry = FakePublisher(), CollectorRegistry()
    rp = verp.return_path(secret_key=SECRET, delivery_id=17, domain=DOMAIN)
    receiver = intake(publisher, metrics=BounceMetrics(registry))
    # The report names a forwarding address; the VERP token names the delivery we made.
    [event] = await receiver.handle_mail(
        dsn_to(rp, "forwarded@elsewhere.example"), envelope_to=[rp]
    )
    assert isinstance(event, BounceReceived)
    assert (event.recipient, event.language, event.delivery_id, event.bounce_class) == (
        READER,
        "be",
        17,
        "hard",
    )
    assert publisher.events[0][0] == "bounce.received"
    value = registry.get_sample_value(
        "newsletter_bounces_total", {"class": "hard", "language": "be", "domain": "example.com"}
    )
    assert value == 1.0


async def test_a_dsn_to_a_role_address_naming_a_reader_changes_nobody_and_is_kept() -> None:
    publisher, kept, registry = FakePublisher(), Kept(), CollectorRegistry()
    receiver = intake(publisher, kept=kept, metrics=BounceMetrics(registry))
    data = dsn_to(f"postmaster@{DOMAIN}", READER)
    assert await receiver.handle_mail(data, envelope_to=[f"postmaster@{DOMAIN}"]) == []
    assert publisher.events == []
    [report] = kept.reports
    assert (report.status, report.mailbox, report.bounce_class, report.recipient) == (
        "unmatched",
        "postmaster",
        "hard",
        READER,
    )
    assert "no VERP token" in report.reason
    sample = registry.get_sample_value(
        "newsletter_bounce_reports_kept_total", {"status": "unmatched", "source": "smtp"}
    )
    assert sample == 1.0


async def test_a_guessable_unsigned_message_id_proves_nothing() -> None:
    publisher, kept = FakePublisher(), Kept()
    data = arf_to(f"abuse@{DOMAIN}", recipient="", original_message_id="<d17.abcdef12@example.org>")
    assert (
        await intake(publisher, kept=kept).handle_mail(data, envelope_to=[f"abuse@{DOMAIN}"]) == []
    )
    assert publisher.events == []


async def test_a_complaint_without_recipient_finds_the_reader_through_our_message_id() -> None:
    publisher = FakePublisher()
    data = arf_to(f"abuse@{DOMAIN}", recipient="", original_message_id=our_message_id(17))
    [event] = await intake(publisher).handle_mail(data, envelope_to=[f"abuse@{DOMAIN}"])
    assert isinstance(event, BounceReceived)
    assert (event.recipient, event.bounce_class, event.delivery_id) == (READER, "complaint", 17)


async def test_our_message_id_with_another_recipient_is_kept_not_applied() -> None:
    publisher, kept = FakePublisher(), Kept()
    data = arf_to(
        f"abuse@{DOMAIN}", recipient="victim@example.net", original_message_id=our_message_id(17)
    )
    assert (
        await intake(publisher, kept=kept).handle_mail(data, envelope_to=[f"abuse@{DOMAIN}"]) == []
    )
    assert publisher.events == []
    assert "not the address of the delivery" in kept.reports[0].reason


async def test_a_report_too_deeply_nested_to_parse_is_kept_unreadable(tmp_path: Path) -> None:
    publisher, kept = FakePublisher(), Kept()
    head = "".join(
        f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n' for i in range(5000)
    )
    text = f"From: x@example.net\r\nTo: bounces@{DOMAIN}\r\nMIME-Version: 1.0\r\n{head}hi\r\n"
    data = text.encode()
    receiver = intake(publisher, kept=kept, archive_dir=tmp_path)
    assert await receiver.handle_mail(data, envelope_to=[f"bounces@{DOMAIN}"]) == []
    [report] = kept.reports
    assert report.status == "unreadable"
    assert "nested MIME" in report.reason
    assert "file=" in report.evidence  # archived, for a human to look at


async def test_the_same_report_twice_gives_the_same_event_id() -> None:
    publisher = FakePublisher()
    rp = verp.return_path(secret_key=SECRET, delivery_id=17, domain=DOMAIN)
    data = dsn_to(rp, READER)
    first = await intake(publisher).handle_mail(data, envelope_to=[rp])
    second = await intake(publisher).handle_mail(data, envelope_to=[rp])
    assert [e.message_id for e in first] == [e.message_id for e in second]
    assert len(first) == 1


async def test_mail_to_the_unsubscribe_address_becomes_an_unsubscribe_request() -> None:
    publisher = FakePublisher()
    mailto = verp.unsubscribe_mailto(secret_key=SECRET, subscriber_id=99, domain=DOMAIN)
    data = f"From: Reader <reader@example.com>\r\nTo: {mailto}\r\nSubject: stop\r\n\r\n".encode()
    [event] = await intake(publisher).handle_mail(data, envelope_to=[mailto])
    assert isinstance(event, UnsubscribeRequested)
    # the signed address names the subscriber; From is the sender's to choose and names nobody
    assert (event.subscriber_id, event.recipient, event.method) == (99, mailto, "mailto")
    assert publisher.events[0][0] == "unsubscribe.requested"


async def test_a_broker_outage_is_reported_so_the_sender_retries() -> None:
    rp = verp.return_path(secret_key=SECRET, delivery_id=17, domain=DOMAIN)
    with pytest.raises(IntakeUnavailable):
        await intake(FakePublisher(fail=True)).handle_mail(dsn_to(rp, READER), envelope_to=[rp])


def test_ses_notices_carry_what_names_the_delivery_but_trust_nothing() -> None:
    rp = verp.return_path(secret_key=SECRET, delivery_id=8, domain=DOMAIN)
    bounce = {
        "notificationType": "Bounce",
        "mail": {
            "source": rp,
            "commonHeaders": {"messageId": our_message_id(8)},
            "headers": [{"name": "Message-ID", "value": our_message_id(8)}],
        },
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
    [notice] = ses_notices(bounce)
    assert notice.finding.bounce_class == "hard"
    assert notice.finding.delivery_id is None
    assert (notice.return_paths, notice.message_ids) == ((rp,), (our_message_id(8),))
    full = json.loads(json.dumps(bounce))
    full["bounce"].update(bounceType="Transient", bounceSubType="MailboxFull")
    assert ses_notices(full)[0].finding.bounce_class == "soft"
    complaint = {
        "notificationType": "Complaint",
        "mail": {"source": "x@example.org"},
        "complaint": {"feedbackId": "c-1", "complainedRecipients": [{"emailAddress": "a@x.com"}]},
    }
    assert ses_notices(complaint)[0].finding.bounce_class == "complaint"
    assert ses_notices({"notificationType": "Bounce", "mail": [], "bounce": "junk"}) == []


def test_postmark_and_sendgrid_types_map_to_classes() -> None:
    def postmark(kind: str, record: str = "Bounce") -> str:
        body = {"RecordType": record, "Type": kind, "Email": "a@example.com", "ID": 1}
        return postmark_notices(body)[0].finding.bounce_class

    assert (postmark("HardBounce"), postmark("DMARCPolicy")) == ("hard", "policy")
    assert postmark("SpamComplaint", "SpamComplaint") == "complaint"
    events = [
        {"event": "bounce", "type": "bounce", "email": "a@example.com", "status": "5.1.1",
         "reason": "550 5.1.1 no such user", "sg_event_id": "e1", "delivery_id": "12"},
        {"event": "bounce", "type": "blocked", "email": "b@example.com", "status": "5.7.1",
         "reason": "550 5.7.1 blocked by policy", "sg_event_id": "e2"},
        {"event": "spamreport", "email": "c@example.com", "sg_event_id": "e3",
         "smtp-id": "<x.1@example.org>"},
        {"event": "deferred", "email": "d@example.com", "response": "451 4.7.1 try later",
         "sg_event_id": "e4"},
        {"event": "unsubscribe", "email": "e@example.com", "sg_event_id": "e5"},
        {"event": "open", "email": "f@example.com", "sg_event_id": "e6"},
    ]  # fmt: skip
    notices = sendgrid_notices(events)
    assert [(n.finding.bounce_class, n.unsubscribe) for n in notices] == [
        ("hard", False),
        ("policy", False),
        ("complaint", False),
        ("delayed", False),
        ("unknown", True),
    ]
    assert notices[0].claimed == "12"
    assert notices[2].message_ids == ("<x.1@example.org>",)


def test_a_delivery_id_beyond_64_bits_is_a_bad_request() -> None:
    event = {"event": "bounce", "email": "a@example.com", "delivery_id": str(2**64 + 5)}
    with pytest.raises(WebhookRejected):
        sendgrid_notices([event])
    with pytest.raises(WebhookRejected):
        postmark_notices({"RecordType": "Bounce", "Metadata": {"delivery_id": 2**70}})
    assert sendgrid_notices([{**event, "event": "bounce", "delivery_id": "abc"}])[0].claimed == ""


async def test_a_claimed_delivery_id_acts_only_with_that_deliverys_address() -> None:
    publisher, kept = FakePublisher(), Kept()
    receiver = intake(publisher, kept=kept)
    attacker = {"event": "spamreport", "email": "mallory@evil.example", "delivery_id": "17",
                "sg_event_id": "a1"}  # fmt: skip
    assert await receiver.publish_notices(sendgrid_notices([attacker]), source="sendgrid") == 0
    assert publisher.events == []
    assert kept.reports[0].reason == "the recipient is not the address of the delivery it quotes"
    owner = {**attacker, "email": READER.lower(), "sg_event_id": "a2"}
    assert await receiver.publish_notices(sendgrid_notices([owner]), source="sendgrid") == 1
    event = publisher.events[0][1]
    assert isinstance(event, BounceReceived)
    assert (event.recipient, event.delivery_id, event.bounce_class) == (READER, 17, "complaint")


async def test_an_event_naming_nobody_of_ours_is_kept_and_a_signed_reference_counts() -> None:
    publisher, kept = FakePublisher(), Kept()
    receiver = intake(publisher, kept=kept)
    stranger = {"RecordType": "Bounce", "Type": "HardBounce", "Email": READER, "ID": 3}
    assert await receiver.publish_notices(postmark_notices(stranger), source="postmark") == 0
    assert kept.reports[0].reason == "no VERP token, signed Message-ID or delivery id of ours"
    reference = verp.delivery_reference(secret_key=SECRET, delivery_id=17)
    signed = {**stranger, "Metadata": {"delivery_id": reference}, "ID": 4}
    assert await receiver.publish_notices(postmark_notices(signed), source="postmark") == 1


async def test_an_unsubscribe_event_names_the_ledgers_subscriber() -> None:
    publisher = FakePublisher()
    smtp_id = our_message_id(17)
    event = {"event": "unsubscribe", "email": READER, "sg_event_id": "u1", "smtp-id": smtp_id}
    assert (
        await intake(publisher).publish_notices(sendgrid_notices([event]), source="sendgrid") == 1
    )
    [(key, message)] = publisher.events
    assert key == "unsubscribe.requested"
    assert isinstance(message, UnsubscribeRequested)
    assert (message.subscriber_id, message.delivery_id, message.recipient) == (5, 17, READER)


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


def verp_dsn() -> bytes:
    return dsn_to(verp.return_path(secret_key=SECRET, delivery_id=17, domain=DOMAIN), READER)


async def test_imap_polling_marks_messages_seen_only_after_publishing() -> None:
    box = FakeMailbox({"1": verp_dsn()})
    publisher = FakePublisher()
    assert await poll_once(intake=intake(publisher), connect=lambda: box, mailbox="INBOX") == 1
    assert box.seen == ["1"]
    assert box.logged_out
    assert publisher.events[0][1].source == "imap"  # type: ignore[attr-defined]

    failing = FakeMailbox({"2": verp_dsn()})
    down = intake(FakePublisher(fail=True))
    assert await poll_once(intake=down, connect=lambda: failing, mailbox="INBOX") == 0
    assert failing.seen == []


async def test_one_report_read_over_smtp_and_imap_is_one_event() -> None:
    publisher = FakePublisher()
    [smtp] = await intake(publisher).handle_mail(verp_dsn(), source="smtp")
    [imap] = await intake(publisher).handle_mail(verp_dsn(), source="imap")
    assert smtp.message_id == imap.message_id


def test_archived_reports_older_than_the_retention_are_pruned(tmp_path: Path) -> None:
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
    [event] = await intake(FakePublisher(), archive_dir=blocker).handle_mail(verp_dsn())
    assert isinstance(event, BounceReceived)
    assert "file=" not in event.evidence


async def test_the_receiver_answers_451_only_for_our_own_outage() -> None:
    from aiosmtpd.smtp import Envelope

    from services.bounces.smtp_receiver import ReturnPathHandler

    async def broken_lookup(_: int) -> DeliveryInfo | None:
        raise ConnectionError("database down")

    rp = verp.return_path(secret_key=SECRET, delivery_id=17, domain=DOMAIN)
    envelope = Envelope()
    envelope.rcpt_tos = [rp]
    envelope.content = dsn_to(rp, READER)
    for receiver in (
        BounceIntake(publisher=FakePublisher(), secret_key=SECRET, lookup=broken_lookup),
        intake(FakePublisher(fail=True)),
    ):
        handler = ReturnPathHandler(
            intake=receiver, secret_key=SECRET, domain=DOMAIN, accept_locals=frozenset()
        )
        reply = await handler.handle_DATA(None, None, envelope)  # type: ignore[arg-type]
        assert reply.startswith("451 ")


def test_postmark_metadata_keys_are_read_whatever_their_case() -> None:
    """``X-PM-Metadata-delivery_id`` is a header name: a relay may re-case it."""
    reference = verp.delivery_reference(secret_key=SECRET, delivery_id=12)
    for key in ("delivery_id", "Delivery_Id", "DELIVERY_ID"):
        event = {"RecordType": "Bounce", "Type": "HardBounce", "ID": 1,
                 "Email": "reader@example.com", "Metadata": {key: reference}}  # fmt: skip
        [notice] = postmark_notices(event)
        assert notice.claimed == reference


async def test_an_ses_complaint_mailed_by_sns_is_kept_for_operators_and_changes_nobody() -> None:
    """A mailed SNS notification carries no SNS signature: even quoting our signed Message-ID
    and naming the reader, it is kept (with its class) and only the webhook acts on SES."""
    publisher, kept = FakePublisher(), Kept()
    event = {
        "notificationType": "Complaint",
        "complaint": {
            "feedbackId": "f-9",
            "complainedRecipients": [{"emailAddress": READER}],
            "complaintFeedbackType": "abuse",
        },
        "mail": {"commonHeaders": {"messageId": our_message_id(17)}},
    }
    data = (
        "From: AWS Notifications <no-reply@sns.amazonaws.com>\r\n"
        f"To: feedback@{DOMAIN}\r\nSubject: AWS Notification Message\r\n"
        "Message-ID: <sns-1@sns.example>\r\nContent-Type: text/plain\r\n\r\n"
        f"{json.dumps(event)}\r\n"
    ).encode()
    receiver = intake(publisher, kept=kept)
    assert await receiver.handle_mail(data, envelope_to=[f"feedback@{DOMAIN}"]) == []
    assert publisher.events == []
    [report] = kept.reports
    assert (report.status, report.bounce_class, report.recipient) == (
        "unmatched",
        "complaint",
        READER,
    )
