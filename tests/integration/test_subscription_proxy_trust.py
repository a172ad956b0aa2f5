"""Behind the public proxy, the per-client limits count the client that X-Forwarded-For names,
and only when the proxy is one the settings trust (``NEWSLETTER_FORWARDED_ALLOW_IPS``, passed
to uvicorn by ``serve``'s own options). Real HTTP, real database and RabbitMQ."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.integration.subscription_http import served_subscription
from tests.integration.subscription_support import ADMIN_TOKEN, private_amqp_url, settings_for

pytestmark = pytest.mark.integration
__all__ = ["private_amqp_url"]
RIGHT = f"Bearer {ADMIN_TOKEN}"


async def _status(base: str, *, forwarded_for: str, token: str) -> int:
    headers = {"X-Forwarded-For": forwarded_for, "Authorization": token}
    async with httpx.AsyncClient(base_url=base, timeout=30.0) as client:
        return (await client.get("/api/subscribers", headers=headers)).status_code


@pytest.mark.parametrize("trusted", [True, False], ids=["trusted-proxy", "untrusted-peer"])
async def test_the_limits_count_the_forwarded_client_only_from_a_trusted_proxy(
    private_amqp_url: str, sqlite_url: str, tmp_path: Path, trusted: bool
) -> None:
    settings = settings_for(private_amqp_url, sqlite_url, tmp_path).model_copy(
        update={
            "admin_api_failures_allowed": 2,
            "forwarded_allow_ips": "127.0.0.1" if trusted else "192.0.2.1",
        }
    )
    async with served_subscription(settings) as base:
        for guess in ("Bearer guess-1", "Bearer guess-2"):
            assert await _status(base, forwarded_for="198.51.100.7", token=guess) == 401
        assert await _status(base, forwarded_for="198.51.100.7", token=RIGHT) == 429
        other = await _status(base, forwarded_for="198.51.100.8", token=RIGHT)
        # Trusted: another reader behind the same proxy is not held. Untrusted: the header is
        # ignored, so a client cannot pick a fresh key by writing one.
        assert other == (200 if trusted else 429)
