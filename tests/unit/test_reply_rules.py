"""One reply, one class: the dispatcher's outcomes and the bounce classifier agree.

Each reply goes through three paths: the dispatcher's synchronous ``classify(code, reply)``,
an RFC 3464 DSN whose Diagnostic-Code is that reply, and a Postfix-style plain-text bounce
quoting it. All three must give the class of the shared rules (and the expected one).
"""

from __future__ import annotations

import pytest

from services.bounces.classifier import classify as classify_report
from services.dispatcher.outcomes import classify as classify_outcome
from shared.reply_rules import classify_smtp_reply
from shared.reply_rules.status_codes import status_of_reply

RECIPIENT = "reader@example.net"

REPLIES = [
    # Microsoft Exchange Online NDR docs: Directory-Based Edge Blocking, missing mailbox.
    (550, "5.4.1 Recipient address rejected: Access denied. AS(201806281)", "hard"),
    (
        550,
        "5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
        "hard",
    ),
    (550, "5.7.606 Access denied, banned sending IP [203.0.113.5]", "policy"),
    # Gmail SMTP error reference.
    (550, "5.1.1 The email account that you tried to reach does not exist. - gsmtp", "hard"),
    (550, "5.7.26 This mail is unauthenticated, which poses a security risk. - gsmtp", "policy"),
    (550, "5.7.1 Our system has detected that this message is likely unsolicited mail", "policy"),
    (552, "5.2.2 The email account that you tried to reach is over quota. - gsmtp", "soft"),
    (421, "4.7.0 unusual rate of unsolicited mail originating from your IP address", "policy"),
    (450, "4.2.1 The user you are trying to contact is receiving mail too quickly", "soft"),
    # Yahoo's published errors.
    (554, "delivery error: dd This user doesn't have a yahoo.com account", "hard"),
    (421, "4.7.0 [TSS04] Messages temporarily deferred due to unexpected volume", "policy"),
    # Postfix smtpd(8).
    (
        550,
        "5.1.1 <reader@example.net>: Recipient address rejected: User unknown in "
        "virtual mailbox table",
        "hard",
    ),
    (
        554,
        "5.7.1 Service unavailable; Client host [203.0.113.5] blocked using zen.spamhaus.org",
        "policy",
    ),
    (554, "5.7.1 <reader@example.net>: Relay access denied", "policy"),
    (450, "4.1.1 <reader@example.net>: Recipient address rejected: User unknown", "soft"),
    # RFC 5321 4.2.2: a bare 550 says nothing about the address.
    (550, "Requested action not taken: mailbox unavailable", "unknown"),
    (550, "5.0.0 Message rejected", "unknown"),
    # RFC 5321 551 and RFC 3463 X.6 / X.3.4.
    (551, "User not local; please try <other@example.org>", "hard"),
    (554, "5.6.0 Message content rejected", "policy"),
    (552, "5.3.4 Message size exceeds fixed maximum message size", "soft"),
]


def _dsn(code: int, reply: str) -> bytes:
    status = status_of_reply(code, reply)
    return (
        "From: MAILER-DAEMON@mx.example.org\r\nTo: bounces@lists.example.org\r\n"
        "Subject: Delivery Status Notification (Failure)\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.org\r\n\r\n"
        f"Final-Recipient: rfc822; {RECIPIENT}\r\n"
        f"Action: failed\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; {code} {reply}\r\n\r\n--b--\r\n"
    ).encode()


def _postfix_text(code: int, reply: str) -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example.org (Mail Delivery System)\r\n"
        "To: bounces@lists.example.org\r\nSubject: Undelivered Mail Returned to Sender\r\n\r\n"
        "This is the mail system at host mx.example.org.\r\n\r\n"
        "I'm sorry to have to inform you that your message could not\r\n"
        "be delivered to one or more recipients.\r\n\r\n"
        f"<{RECIPIENT}>: host mx.example.net[192.0.2.25] said: {code} {reply}\r\n"
        "    (in reply to RCPT TO command)\r\n"
    ).encode()


@pytest.mark.parametrize(("code", "reply", "expected"), REPLIES)
def test_one_reply_gets_one_class_in_the_dispatcher_and_the_receiver(
    code: int, reply: str, expected: str
) -> None:
    shared = classify_smtp_reply(code, reply).bounce_class
    outcome = classify_outcome(code, reply, phase="rcpt").bounce_class
    [from_dsn] = classify_report(_dsn(code, reply))
    [from_text] = classify_report(_postfix_text(code, reply))
    assert (from_dsn.recipient, from_text.recipient) == (RECIPIENT, RECIPIENT)
    got = {
        "shared": shared,
        "dispatcher": outcome,
        "dsn": from_dsn.bounce_class,
        "text": from_text.bounce_class,
    }
    assert got == dict.fromkeys(got, expected), got


@pytest.mark.parametrize(("code", "reply", "expected"), REPLIES)
def test_the_dispatcher_suppresses_only_what_the_rules_call_hard(
    code: int, reply: str, expected: str
) -> None:
    outcome = classify_outcome(code, reply, phase="rcpt")
    assert outcome.hard_bounce == (expected == "hard"), outcome
    if expected == "policy" and code >= 500:
        assert (outcome.status, outcome.policy) == ("failed", True)
