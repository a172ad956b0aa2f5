"""SMTP replies classified into delivery outcomes."""

from __future__ import annotations

import pytest

from services.dispatcher.outcomes import classify, connection_lost


@pytest.mark.parametrize(
    ("code", "reply", "phase", "status", "throttle", "policy"),
    [
        (250, "2.0.0 OK", "data", "sent", False, False),
        (421, "4.7.0 slow down", "rcpt", "deferred", True, False),
        (451, "4.7.1 greylisted", "rcpt", "deferred", True, False),
        (450, "4.2.0 mailbox busy", "rcpt", "deferred", True, False),
        (452, "4.3.1 insufficient storage", "data", "deferred", True, False),
        (550, "5.1.1 user unknown", "rcpt", "bounced", False, False),
        (550, "no such user", "rcpt", "bounced", False, False),
        (552, "5.2.2 mailbox full", "rcpt", "deferred", False, False),
        (554, "5.7.1 message refused by policy", "rcpt", "failed", False, True),
        (550, "rejected: listed on a blocklist", "rcpt", "failed", False, True),
        (553, "5.7.1 sender not authorized", "mail", "failed", False, True),
        (554, "5.6.0 message content rejected", "data", "failed", False, True),
        # Office 365 Directory-Based Edge Blocking: a missing mailbox despite "denied".
        (550, "5.4.1 Recipient address rejected: Access denied", "rcpt", "bounced", False, False),
        # RFC 5321 4.2.2: a bare 550 is not proof; no suppression, no breaker.
        (550, "Requested action not taken: mailbox unavailable", "rcpt", "failed", False, False),
        (550, "5.1.1 user unknown", "data", "bounced", False, False),
        (550, "5.1.1 user unknown", "mail", "failed", False, True),
        (552, "5.3.4 message too big", "data", "failed", False, False),
    ],
)
def test_a_reply_maps_to_the_outcome_of_the_field(
    code: int, reply: str, phase: str, status: str, throttle: bool, policy: bool
) -> None:
    outcome = classify(code, reply, phase=phase)  # type: ignore[arg-type]
    assert (outcome.status, outcome.throttle, outcome.policy) == (status, throttle, policy)


def test_a_lost_connection_before_data_is_deferred_and_after_data_unknown() -> None:
    assert connection_lost(phase="rcpt", reason="dropped").status == "deferred"
    assert connection_lost(phase="connect", reason="refused").status == "deferred"
    assert connection_lost(phase="data", reason="timeout").status == "unknown"


def test_the_enhanced_status_travels_with_a_bounce() -> None:
    assert classify(550, "5.1.1 <a@b.c>: user unknown", phase="rcpt").enhanced == "5.1.1"
