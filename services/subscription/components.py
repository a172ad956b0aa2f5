"""The subscription app's own collaborators, built once by ``create_app`` and put on
``app.state.components`` (routes take them through ``ComponentsDep``)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Request

from services.subscription.form_guard import CsrfGuard, TimeTrap
from services.subscription.link_tokens import LinkTokenReader
from services.subscription.metrics import SubscriptionMetrics
from services.subscription.pages import Pages
from services.subscription.policy import SignupPolicy
from services.subscription.timing import ResponseFloor
from shared.links import Links
from shared.rate_limit import SlidingWindowLimiter, request_client_key


@dataclass
class Components:
    policy: SignupPolicy
    links: Links
    reader: LinkTokenReader
    csrf: CsrfGuard
    time_trap: TimeTrap
    ip_limiter: SlidingWindowLimiter
    floor: ResponseFloor
    pages: Pages
    metrics: SubscriptionMetrics
    ip_key: bytes
    # NEWSLETTER_PER_READER_ANALYTICS: the consent box on the signup and preference forms.
    reader_analytics: bool = False

    def client_ip(self, request: Request) -> str:
        return request.client.host if request.client else "unknown"

    def limit_key(self, request: Request) -> str:
        """The key of the per-client limits (an IPv6 client's /64: ``shared.rate_limit``)."""
        return request_client_key(request)

    def ip_hash(self, request: Request) -> str:
        """A keyed hash of the client IP for the consent ledger (not reversible offline)."""
        ip = self.client_ip(request).encode()
        return hmac.digest(self.ip_key, ip, "sha256").hex()[:32]
