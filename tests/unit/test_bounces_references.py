"""Our own headers are found wherever a report returns them, and nowhere they are not."""

from __future__ import annotations

from services.bounces.references import MAX_DEPTH, find_references

OURS = "<d42.abcdef12.0123456789abcdef@example.org>"


def report(parts: str, *, headers: str = "") -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example.net\r\nTo: bounces@lists.example.org\r\n"
        f"Message-ID: <report-1@mx.example.net>\r\n{headers}MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="r"\r\n\r\n'
        f"{parts}--r--\r\n"
    ).encode()


RETURNED_HEADERS = (
    f"Return-Path: <bounces+42-0011223344556677@lists.example.org>\r\nMessage-ID: {OURS}\r\n"
    "List-Id: Weekly Digest <weekly-digest.example.org>\r\n"
    "Feedback-ID: abc:en:newsletter:example.org\r\nSubject: Weekly\r\n"
)


def test_a_returned_message_gives_its_message_id_list_id_feedback_id_and_return_path() -> None:
    data = report(f"--r\r\nContent-Type: message/rfc822\r\n\r\n{RETURNED_HEADERS}\r\nHello\r\n")
    refs = find_references(data)
    assert refs.message_ids == (OURS,)  # not the report's own Message-ID
    assert refs.list_ids == ("weekly-digest.example.org",)
    assert refs.feedback_ids == ("abc:en:newsletter:example.org",)
    assert "bounces+42-0011223344556677@lists.example.org" in refs.addresses


def test_header_parts_and_pasted_headers_in_text_count_too() -> None:
    for kind in ("text/rfc822-headers", "message/rfc822-headers"):
        refs = find_references(report(f"--r\r\nContent-Type: {kind}\r\n\r\n{RETURNED_HEADERS}"))
        assert refs.message_ids == (OURS,), kind
    pasted = report(
        "--r\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        f"Original headers follow:\r\n\r\n> Message-Id: {OURS}\r\n> Subject: Weekly\r\n"
    )
    assert find_references(pasted).message_ids == (OURS,)


def test_an_arf_original_mail_from_and_the_envelope_headers_are_read() -> None:
    data = report(
        "--r\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\n"
        "Original-Mail-From: <bounces+9-aaaaaaaaaaaaaaaa@lists.example.org>\r\n\r\n",
        headers="Delivered-To: bounces+8-bbbbbbbbbbbbbbbb@lists.example.org\r\n",
    )
    addresses = find_references(data).addresses
    assert "bounces+9-aaaaaaaaaaaaaaaa@lists.example.org" in addresses
    assert "bounces+8-bbbbbbbbbbbbbbbb@lists.example.org" in addresses


def test_a_report_without_a_returned_part_quotes_nothing() -> None:
    refs = find_references(report("--r\r\nContent-Type: text/plain\r\n\r\nUser unknown\r\n"))
    assert refs.message_ids == ()
    assert refs.list_ids == ()


def test_deep_nesting_is_cut_at_the_depth_limit_and_junk_never_raises() -> None:
    inner = f"Content-Type: message/rfc822\r\n\r\n{RETURNED_HEADERS}\r\nHello\r\n"
    for level in range(MAX_DEPTH + 4):
        inner = (
            f'Content-Type: multipart/mixed; boundary="n{level}"\r\n\r\n'
            f"--n{level}\r\n{inner}\r\n--n{level}--\r\n"
        )
    deep = f"From: x@example.net\r\nMIME-Version: 1.0\r\n{inner}".encode()
    assert find_references(deep).message_ids == ()
    for junk in (b"", b"\xff\xfe\x00", b"Content-Type: multipart/mixed\r\n\r\n--", b"\r\n" * 5):
        assert find_references(junk).message_ids == ()
