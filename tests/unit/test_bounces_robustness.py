"""Hostile or odd input: deep MIME trees, mangled bytes, complaints that name nobody."""

from __future__ import annotations

import random
from pathlib import Path

from services.bounces.classifier import classify
from services.bounces.corpus import read_labels
from services.bounces.report import parse

WORKING = Path(__file__).resolve().parents[1] / "fixtures" / "bounces" / "working"
CLASSES = {"hard", "soft", "policy", "delayed", "unknown", "complaint", "auto-reply"}


def _nested(depth: int, leaf: str) -> bytes:
    head = (
        "From: MAILER-DAEMON@mx.example.net\r\nSubject: Undelivered Mail\r\nMIME-Version: 1.0\r\n"
    )
    opening = "".join(
        f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n' for i in range(depth)
    )
    closing = "".join(f"\r\n--b{i}--\r\n" for i in reversed(range(depth)))
    return (head + opening + "Content-Type: text/plain\r\n\r\n" + leaf + closing).encode()


def test_five_thousand_nested_parts_are_read_without_recursion() -> None:
    data = _nested(5000, "<gone@example.com>: host mx said: 550 5.1.1 User unknown\r\n")
    parsed = parse(data)  # raised RecursionError before the walk was bounded
    assert "550 5.1.1" in parsed.human_text
    [finding] = classify(data)
    assert (finding.recipient, finding.bounce_class) == ("gone@example.com", "hard")


def test_many_sibling_parts_stop_at_the_part_limit() -> None:
    parts = "".join(f"--s\r\nContent-Type: text/plain\r\n\r\npart {i}\r\n" for i in range(5_000))
    data = (
        "From: someone@example.com\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="s"\r\n\r\n' + parts + "--s--\r\n"
    ).encode()
    parsed = parse(data)
    assert parsed.human_text.count("part ") < 1000
    assert classify(data)


def test_mangled_reports_never_raise() -> None:
    rng = random.Random(20261101)  # fixed seed: the same cases every run
    samples = [(WORKING / label.file).read_bytes() for label in read_labels(WORKING / "labels.tsv")]
    for data in samples:
        for _ in range(3):
            mangled = bytearray(data)
            cut = rng.randrange(len(mangled))
            if rng.random() < 0.5:
                del mangled[cut:]
            for _ in range(rng.randrange(1, 30)):
                if mangled:
                    mangled[rng.randrange(len(mangled))] = rng.randrange(256)
            findings = classify(bytes(mangled))
            assert findings, "at least one finding, always"
            assert {f.bounce_class for f in findings} <= CLASSES


def _arf(feedback: str, original: str | None) -> bytes:
    tail = f"--A\r\nContent-Type: text/rfc822-headers\r\n\r\n{original}\r\n" if original else ""
    return (
        "From: fbl@isp.example\r\nTo: fbl@lists.example.org\r\nSubject: report\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=feedback-report;"
        ' boundary="A"\r\n\r\n'
        "--A\r\nContent-Type: text/plain\r\n\r\nA complaint.\r\n"
        f"--A\r\nContent-Type: message/feedback-report\r\n\r\n{feedback}\r\n"
        f"{tail}--A--\r\n"
    ).encode()


def test_a_complaint_naming_nobody_is_still_a_complaint() -> None:
    [finding] = classify(_arf("Feedback-Type: abuse\r\nUser-Agent: X/1\r\nVersion: 1", None))
    assert (finding.bounce_class, finding.kind, finding.recipient) == ("complaint", "complaint", "")
    assert finding.feedback_type == "abuse"


def test_a_redacted_recipient_is_not_taken_for_an_address() -> None:
    original = "From: news@lists.example.org\r\nTo: redacted@isp.example\r\nSubject: Weekly"
    [finding] = classify(_arf("Feedback-Type: abuse\r\nVersion: 1", original))
    assert (finding.bounce_class, finding.recipient) == ("complaint", "")


def test_not_spam_feedback_is_no_complaint() -> None:
    feedback = "Feedback-Type: not-spam\r\nVersion: 1\r\nOriginal-Rcpt-To: glad@isp.example"
    [finding] = classify(_arf(feedback, None))
    assert (finding.bounce_class, finding.recipient) == ("unknown", "glad@isp.example")


def test_a_feedback_report_without_a_type_is_a_complaint() -> None:
    [finding] = classify(_arf("User-Agent: X/1\r\nOriginal-Rcpt-To: who@isp.example", None))
    assert (finding.bounce_class, finding.recipient) == ("complaint", "who@isp.example")


def test_our_own_addresses_in_a_plain_bounce_are_not_recipients() -> None:
    data = (
        b"From: MAILER-DAEMON@mx.example.net\r\n"
        b"To: bounces+12-abcdef@lists.example.org\r\nSubject: failure notice\r\n\r\n"
        b"Hi. This is the qmail-send program at mx.example.net.\r\n"
        b"I'm afraid I wasn't able to deliver your message to the following addresses.\r\n\r\n"
        b"<reader@example.net>:\r\nSorry, no mailbox here by that name. (#5.1.1)\r\n\r\n"
        b"--- Below this line is a copy of the message.\r\n\r\n"
        b"Return-Path: <bounces+12-abcdef@lists.example.org>\r\n"
        b"From: Weekly <news@lists.example.org>\r\nTo: reader@example.net\r\n"
    )
    assert [(f.recipient, f.bounce_class) for f in classify(data)] == [
        ("reader@example.net", "hard")
    ]


def test_five_thousand_nested_attached_messages_are_read_without_recursion() -> None:
    chain = "Content-Type: message/rfc822\r\n\r\n" * 5000
    data = (
        "From: MAILER-DAEMON@mx.example.net\r\nSubject: Undelivered Mail\r\n"
        + chain
        + "Content-Type: text/plain\r\n\r\n<gone@example.com>: 550 5.1.1 User unknown\r\n"
    ).encode()
    parse(data)
    assert [(f.recipient, f.bounce_class) for f in classify(data)] == [("gone@example.com", "hard")]


_PLAIN_BOUNCE = """From: Mail Delivery System <MAILER-DAEMON@mx.example.net>
To: bounces+r1@news.example.org
Subject: Nedoru\u010ditelná zpráva
Content-Type: text/plain; charset=utf-8

Your message for <reader@example.net> could not be delivered.

Reason: 550 5.1.1 recipient does not exist

{divider}
Return-Path: <bounces+r1@news.example.org>
Received: from app.news.example.org by mta.news.example.org; Mon, 14 Oct 2024 06:00:31 +0200
DKIM-Signature: v=1; a=rsa-sha256; d=news.example.org; s=nl; h=from:to; bh=x; b=y
From: Weekly Digest <digest@news.example.org>
To: reader@example.net
Subject: Weekly Digest 12
"""


def test_an_original_pasted_inline_is_cut_off_whatever_its_marker_line() -> None:
    """Our own DKIM-Signature in the quoted header is no "DKIM" refusal: with a localized
    marker line, or none, the report's words end where the pasted header begins."""
    for divider in ("------ Kopie zprávy / Copy of the message ------", "", "Anbei:"):
        parsed = parse(_PLAIN_BOUNCE.format(divider=divider).encode())
        assert "DKIM-Signature" not in parsed.human_text, divider
        assert parsed.original is not None
        assert parsed.original.get("Subject") == "Weekly Digest 12"
        (finding,) = classify(_PLAIN_BOUNCE.format(divider=divider).encode())
        assert (finding.recipient, finding.bounce_class) == ("reader@example.net", "hard")


def test_dsn_fields_and_a_summary_of_the_message_are_not_an_original() -> None:
    text = (
        "This is the mail system at host mx.example.net.\n\n"
        "To: reader@example.net\nSubject: Weekly Digest 12\nDate: Mon, 14 Oct 2024\n\n"
        "Reporting-MTA: dns; mx.example.net\nFinal-Recipient: rfc822; reader@example.net\n"
        "Action: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 user unknown\n"
    )
    message = f"From: MAILER-DAEMON@mx.example.net\nSubject: Undelivered\n\n{text}"
    parsed = parse(message.encode())
    assert "Diagnostic-Code: smtp; 550 5.1.1 user unknown" in parsed.human_text
    assert "Subject: Weekly Digest 12" in parsed.human_text
