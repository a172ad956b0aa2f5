"""Sessions of the ops page (``/admin``): what its cookie holds instead of the admin token.

The cookie is a random session id signed with the secret key and a timestamp
(itsdangerous ``TimestampSigner``): it expires after :data:`SESSION_MAX_AGE_S`, cannot be
forged without the key, and a stolen one is not the admin token. Logging out revokes the id on
the server. Revocations live in this process's memory until the session would have expired
anyway: another replica of the app still accepts a logged-out cookie until it expires.

Wrong tokens are counted per client: after :data:`LOGIN_FAILURES_ALLOWED` within
:data:`LOGIN_WINDOW_S`, ``/admin/login`` answers 429 for the rest of the window, as the
renderer's editor login does. Wrong bearer tokens at the admin API have a budget of their own
(``NEWSLETTER_ADMIN_API_FAILURES_ALLOWED``, :mod:`shared.token_budget`).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

from fastapi import Request
from itsdangerous import BadSignature, TimestampSigner

from shared.rate_limit import SlidingWindowLimiter
from shared.settings import Settings
from shared.token_budget import WrongTokenBudget

COOKIE = "admin_token"  # the name the page has always used; the value is now a session
SESSION_MAX_AGE_S = 8 * 3600
LOGIN_FAILURES_ALLOWED = 5
LOGIN_WINDOW_S = 300.0
SALT = b"subscription-admin-session"


class AdminSessions:
    """Opens, checks and revokes ops-page sessions; counts wrong login tokens."""

    def __init__(
        self,
        *,
        secret_key: str,
        api_failures_allowed: int = 20,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._signer = TimestampSigner(secret_key.encode(), salt=SALT)
        self._clock = clock
        self._revoked: dict[str, float] = {}  # session id -> when it would have expired
        self.login_failures = SlidingWindowLimiter(
            limit=LOGIN_FAILURES_ALLOWED, window_s=LOGIN_WINDOW_S
        )
        # Wrong bearer tokens at the admin API (``dependencies.require_admin``).
        self.api_failures = WrongTokenBudget(limit=api_failures_allowed)

    def open(self) -> str:
        """A new session's cookie value."""
        return self._signer.sign(secrets.token_urlsafe(18)).decode()

    def _session_id(self, cookie: str) -> str | None:
        try:
            session_id = self._signer.unsign(cookie, max_age=SESSION_MAX_AGE_S).decode()
        except BadSignature:  # tampered, signed with another key, or expired
            return None
        return None if session_id in self._revoked else session_id

    def valid(self, cookie: str) -> bool:
        return bool(cookie) and self._session_id(cookie) is not None

    def revoke(self, cookie: str) -> None:
        now = self._clock()
        self._revoked = {k: v for k, v in self._revoked.items() if v > now}
        session_id = self._session_id(cookie)
        if session_id is not None:
            self._revoked[session_id] = now + SESSION_MAX_AGE_S


def admin_sessions(request: Request, settings: Settings) -> AdminSessions:
    """The app's sessions (one per app, on ``app.state.admin_sessions``)."""
    sessions: AdminSessions | None = getattr(request.app.state, "admin_sessions", None)
    if sessions is None:
        sessions = AdminSessions(
            secret_key=settings.secret_key.get_secret_value(),
            api_failures_allowed=settings.admin_api_failures_allowed,
        )
        request.app.state.admin_sessions = sessions
    return sessions
