"""What an SMTP reply means for a delivery: sent, deferred, bounced, failed or unknown.

- 2xx: sent.
- 4xx, refused connections, timeouts before the message data: deferred (retried later).
  421, 451 and 4.7.x also mean "slow down": they feed the domain's flow control.
- 5xx at RCPT naming the address (5.1.x, 5.2.1, plain 550/551/553): bounced, suppress it.
  5.2.2 (mailbox full) is a persistent transient failure: deferred (RFC 3463).
- 5.7.x and policy wording: failed without suppression; counts toward the circuit breaker.
- A timeout or a lost connection after the message data was sent: unknown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Phase = Literal["connect", "mail", "rcpt", "data", "breaker"]
Status = Literal["sent", "deferred", "bounced", "failed", "unknown"]

_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_POLICY_WORDS = (
    "policy",
    "spam",
    "blocked",
    "blacklist",
    "blocklist",
    "reputation",
    "denied",
    "not authorized",
    "dmarc",
    "rate limit",
)
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

    @property
    def hard_bounce(self) -> bool:
        return self.status == "bounced"


def enhanced_status(reply: str) -> str:
    match = _ENHANCED.search(reply)
    return ".".join(match.groups()) if match else ""


def classify(code: int, reply: str, *, phase: Phase) -> Outcome:
    """Classify one SMTP reply received in ``phase``."""
    reply = " ".join(reply.split())[:2000]
    enhanced = enhanced_status(reply)
    lowered = reply.lower()
    if 200 <= code < 300:
        return Outcome("sent", code, reply, phase, enhanced=enhanced)
    # 500/501/503 (bad syntax or sequence) are a client-side protocol slip, not the
    # recipient's problem: deferred like a 4xx.
    if 400 <= code < 500 or code in _OUR_FAULT:
        throttle = code in _THROTTLE_CODES or enhanced.startswith("4.7.")
        return Outcome("deferred", code, reply, phase, throttle=throttle, enhanced=enhanced)
    policy = enhanced.startswith("5.7.") or any(word in lowered for word in _POLICY_WORDS)
    if policy or phase in {"connect", "mail"}:
        return Outcome("failed", code, reply, phase, policy=True, enhanced=enhanced)
    if enhanced == "5.2.2":
        return Outcome("deferred", code, reply, phase, enhanced=enhanced)
    if phase == "rcpt" and (
        enhanced.startswith("5.1.")
        or enhanced == "5.2.1"
        or (not enhanced and code in {550, 551, 553})
    ):
        return Outcome("bounced", code, reply, phase, enhanced=enhanced)
    return Outcome("failed", code, reply, phase, enhanced=enhanced)


def connection_lost(*, phase: Phase, reason: str) -> Outcome:
    """No reply: a refused or dropped connection, or a timeout."""
    if phase == "data":
        return Outcome("unknown", None, reason[:2000], phase)
    return Outcome("deferred", None, reason[:2000], phase)


def breaker_open(domain: str) -> Outcome:
    return Outcome("deferred", None, f"circuit breaker open for {domain}", "breaker")
