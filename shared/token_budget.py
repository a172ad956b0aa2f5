"""An admin token checked against a budget of wrong ones per client.

Both admin APIs (subscription's ``/api/...`` and the renderer's ``/admin/api/...``) take
``Authorization: Bearer <NEWSLETTER_ADMIN_TOKEN>``. Each wrong token costs its client one unit
of ``NEWSLETTER_ADMIN_API_FAILURES_ALLOWED`` within :data:`WINDOW_S`; once the budget is spent,
that client's tokens are not even compared until a unit leaves the window, and the right one
waits too. Accepting the right token while refusing wrong ones would answer a guesser "hit" or
"miss" at full speed, which is what the budget is there to stop (OWASP's Authentication Cheat
Sheet: throttle failed attempts per source). A valid ops-page session cookie is not a token and
is not throttled here.

The budget lives in process memory (:class:`shared.rate_limit.SlidingWindowLimiter`): with N
replicas a guesser gets N budgets, still a few dozen guesses per window against a token of at
least 32 random characters in production.
"""

from __future__ import annotations

import enum
import hmac
import time
from collections.abc import Callable

from shared.rate_limit import SlidingWindowLimiter

WINDOW_S = 300.0


class TokenCheck(enum.Enum):
    ACCEPTED = "accepted"
    WRONG = "wrong"
    THROTTLED = "throttled"


def bearer_token(authorization: str) -> str:
    """The credential of an ``Authorization: Bearer <token>`` header ("" for another scheme
    or none; the scheme is case-insensitive, RFC 7235 2.1)."""
    scheme, _, token = authorization.partition(" ")
    return token if scheme.lower() == "bearer" else ""


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison that also takes non-ASCII input (``compare_digest`` on str
    raises for it); an empty ``expected`` (no token configured) matches nothing."""
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


class WrongTokenBudget:
    """At most ``limit`` wrong tokens per client within ``window_s``; ``limit <= 0``: no budget."""

    def __init__(
        self,
        *,
        limit: int,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._failures = SlidingWindowLimiter(limit=limit, window_s=window_s, clock=clock)

    def check(self, client: str, given: str, expected: str) -> TokenCheck:
        if self._failures.blocked(client):
            return TokenCheck.THROTTLED
        if same_secret(given, expected):
            return TokenCheck.ACCEPTED
        self._failures.record(client)
        return TokenCheck.WRONG

    def retry_after_s(self, client: str) -> int:
        """Whole seconds until ``client`` may present a token again (at least 1)."""
        return max(1, self._failures.retry_after_s(client))
