"""What an SMTP reply means for a delivery: sent, deferred, bounced, failed or unknown.

The class of a 5xx reply comes from the shared rule set (:mod:`shared.reply_rules`), the
same code the bounce receiver runs on a DSN's diagnostic, so one reply gets one class:

- 2xx: sent.
- 4xx, and 500/501/503 (our own protocol slip): deferred (retried later). 421, 450-452 and
  4.7.x also mean "slow down": they feed the domain's flow control.
- 5xx at MAIL or at connect: failed, policy (the refusal is about us, not the address).
- 5xx at RCPT or DATA (one recipient per transaction) of class ``hard``: bounced, suppress.
- class ``soft`` with a full mailbox (RFC 3463 X.2.2, a persistent transient failure):
  deferred; other ``soft`` 5xx (too big, loops): failed without suppression.
- class ``policy``: failed, policy (counts toward the circuit breaker).
- class ``unknown`` (a bare 550 / 5.0.0): failed, no suppression, no breaker.
- A timeout or a lost connection after the message data was sent: unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from shared.messaging.schemas import BounceReceived
from shared.reply_rules import classify_reply, status_codes
from shared.reply_rules import evidence as ev

Phase = Literal["connect", "mail", "rcpt", "data", "breaker"]
Status = Literal["sent", "deferred", "bounced", "failed", "unknown"]

_THROTTLE_CODES = frozenset({421, 450, 451, 452})
_OUR_FAULT = frozenset({500, 501, 503})


@dataclass(frozen=True)
class Outcome:
    status: Status
    code: int | None = None
    reply: str = ""
    phase: Phase = "data"
    throttle: bool = False  # the domain asked us to slow down
    policy: bool = False  # the domain refused us, not the address
    enhanced: str = ""
    bounce_class: str = ""  # the shared rules' class of a 4xx/5xx reply ("" otherwise)

    @property
    def host_throttle(self) -> bool:
        """The server as a whole asked us to slow down (421, or a 4xx slow-down before any
        recipient was named), not one recipient (a 451 at RCPT: greylisting, a per-user rate)."""
        return self.throttle and (self.code == 421 or self.phase in {"connect", "mail"})

    @property
    def hard_bounce(self) -> bool:
        return self.status == "bounced"

    def bounce_event(self, *, to: str, delivery_id: int, language: str) -> BounceReceived:
        """What a refusal in the SMTP dialogue tells the subscription service (suppress)."""
        return BounceReceived(
            recipient=to,
            bounce_class="hard",
            status=self.enhanced,
            diagnostic=f"{self.code} {self.reply}"[:2000],
            source="smtp",
            delivery_id=delivery_id,
            language=language,
        )


def enhanced_status(reply: str) -> str:
    return status_codes.find_enhanced(reply)


def classify(code: int, reply: str, *, phase: Phase) -> Outcome:  # noqa: PLR0911 - a table
    """Classify one SMTP reply received in ``phase``."""
    reply = " ".join(reply.split())[:2000]
    enhanced = enhanced_status(reply)
    if 200 <= code < 300:
        return Outcome("sent", code, reply, phase, enhanced=enhanced)
    status = status_codes.status_of_reply(code, reply)
    verdict = classify_reply(text=reply, status=status, action="failed")
    found = verdict.bounce_class
    # 500/501/503 (bad syntax or sequence) are a client-side protocol slip, not the
    # recipient's problem: deferred like a 4xx.
    if 400 <= code < 500 or code in _OUR_FAULT:
        throttle = code in _THROTTLE_CODES or enhanced.startswith("4.7.")
        return Outcome(
            "deferred", code, reply, phase, throttle=throttle, enhanced=enhanced, bounce_class=found
        )
    if phase in {"connect", "mail", "breaker"}:
        return Outcome(
            "failed", code, reply, phase, policy=True, enhanced=enhanced, bounce_class=found
        )
    if found == "hard":
        return Outcome("bounced", code, reply, phase, enhanced=enhanced, bounce_class=found)
    if found == "policy":
        return Outcome(
            "failed", code, reply, phase, policy=True, enhanced=enhanced, bounce_class=found
        )
    if found == "soft" and (status.endswith(".2.2") or ev.has(ev.MAILBOX_FULL, reply)):
        return Outcome("deferred", code, reply, phase, enhanced=enhanced, bounce_class=found)
    return Outcome("failed", code, reply, phase, enhanced=enhanced, bounce_class=found)


def connection_lost(*, phase: Phase, reason: str) -> Outcome:
    """No reply: a refused or dropped connection, or a timeout."""
    if phase == "data":
        return Outcome("unknown", None, reason[:2000], phase)
    return Outcome("deferred", None, reason[:2000], phase)


def breaker_open(domain: str) -> Outcome:
    return Outcome("deferred", None, f"circuit breaker open for {domain}", "breaker")
