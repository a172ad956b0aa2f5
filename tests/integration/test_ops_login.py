"""The ops page login over real HTTP: the cookie is a signed, expiring session (never the admin
token), logout revokes it on the server, and wrong tokens are throttled per client."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from itsdangerous import TimestampSigner

from services.subscription.admin_sessions import (
    COOKIE,
    LOGIN_FAILURES_ALLOWED,
    SALT,
    SESSION_MAX_AGE_S,
)
from tests.integration.subscription_http import served_subscription
from tests.integration.subscription_support import (
    ADMIN_TOKEN,
    private_amqp_url,
    settings_for,
)

pytestmark = pytest.mark.integration
__all__ = ["private_amqp_url"]
SECRET = "subscription-test-secret-" + "k" * 32  # what settings_for uses


def _client(
    base: str, *, source: str = "127.0.0.1", cookie: str | None = None
) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=source)
    cookies = {COOKIE: cookie} if cookie is not None else None
    return httpx.AsyncClient(base_url=base, transport=transport, cookies=cookies, timeout=30.0)


class _OldSigner(TimestampSigner):
    def get_timestamp(self) -> int:
        return int(time.time()) - SESSION_MAX_AGE_S - 60


async def test_the_cookie_is_a_session_that_logout_revokes(
    private_amqp_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    settings = settings_for(private_amqp_url, sqlite_url, tmp_path)
    async with served_subscription(settings) as base:
        async with _client(base) as operator:
            login = await operator.post("/admin/login", data={"token": ADMIN_TOKEN})
            assert login.status_code == 303
            assert ADMIN_TOKEN not in login.headers["set-cookie"]
            session = operator.cookies[COOKIE]
            assert (await operator.get("/admin")).status_code == 200
        async with _client(base, cookie=session) as thief:
            assert (await thief.get("/admin")).status_code == 200, "the session works elsewhere"
        async with _client(base, cookie=session) as operator:
            assert (await operator.post("/admin/logout")).status_code == 303
        async with _client(base, cookie=session) as thief:
            assert (await thief.get("/admin")).status_code == 401, "logout revoked the session"
            assert (await thief.get("/admin/summary.json")).status_code == 401
        forged = {
            "the raw token": ADMIN_TOKEN,
            "tampered": session[:-2] + ("AA" if not session.endswith("AA") else "BB"),
            "another key": TimestampSigner(b"another-key", salt=SALT).sign(b"x").decode(),
            "expired": _OldSigner(SECRET.encode(), salt=SALT).sign(b"old-session").decode(),
        }
        for what, value in forged.items():
            async with _client(base, cookie=value) as intruder:
                assert (await intruder.get("/admin")).status_code == 401, what


async def test_wrong_tokens_are_throttled_per_client(
    private_amqp_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    settings = settings_for(private_amqp_url, sqlite_url, tmp_path)
    async with served_subscription(settings) as base:
        async with _client(base, source="127.0.0.2") as guesser:
            for attempt in range(LOGIN_FAILURES_ALLOWED):
                wrong = await guesser.post("/admin/login", data={"token": f"guess-{attempt}"})
                assert wrong.status_code == 401, attempt
            blocked = await guesser.post("/admin/login", data={"token": ADMIN_TOKEN})
            assert blocked.status_code == 429, "even the right token waits out the window"
            assert int(blocked.headers["retry-after"]) > 0
            assert COOKIE not in blocked.headers.get("set-cookie", "")
        async with _client(base, source="127.0.0.3") as operator:
            login = await operator.post("/admin/login", data={"token": ADMIN_TOKEN})
            assert login.status_code == 303, "another client is not throttled"


async def test_wrong_bearer_tokens_at_the_admin_api_are_throttled_per_client(
    private_amqp_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    """Past its budget of wrong bearer tokens a client's bearer requests answer 429, the right
    token too; no credential is not a guess, another client and an ops session are not held."""
    settings = settings_for(private_amqp_url, sqlite_url, tmp_path).model_copy(
        update={"admin_api_failures_allowed": 3}
    )
    right = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with served_subscription(settings) as base:
        async with _client(base, source="127.0.0.4") as guesser:
            for _ in range(5):
                assert (await guesser.get("/api/subscribers")).status_code == 401
            assert (await guesser.get("/api/subscribers", headers=right)).status_code == 200
            for guess in ("Bearer guess-1", f"Bearer {ADMIN_TOKEN.upper()}", "Bearer"):
                wrong = await guesser.get("/api/subscribers", headers={"Authorization": guess})
                assert wrong.status_code == 401, guess
            held = await guesser.get("/api/subscribers", headers=right)
            assert held.status_code == 429, "the right token waits out the window too"
            assert int(held.headers["retry-after"]) > 0
            page = await guesser.get("/admin", headers=right)
            assert page.status_code == 429, "the ops page says so too"
            assert int(page.headers["retry-after"]) > 0
            login = await guesser.post("/admin/login", data={"token": ADMIN_TOKEN})
            assert login.status_code == 303, "the ops login has a budget of its own"
            assert (await guesser.get("/admin/summary.json")).status_code == 200, "a session"
        async with _client(base, source="127.0.0.5") as operator:
            assert (await operator.get("/api/subscribers", headers=right)).status_code == 200
