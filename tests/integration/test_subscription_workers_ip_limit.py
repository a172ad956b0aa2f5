"""``serve --workers N``: the per-IP limit holds for the service as a whole, not per worker.

Real processes: the service runs with two workers on one socket (uvicorn's supervisor), and
a client posts from 127.0.0.1 on fresh connections (so the kernel spreads them over both
workers). With ``NEWSLETTER_IP_LIMIT=4`` at most 4 posts in the window may pass, whichever
worker answers them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from benchmarks.signups import (
    _form_fields,
    _start_service,
)
from shared.db.migrate import upgrade
from tests.support.ports import free_port

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


async def _until_ready(
    client: httpx.AsyncClient, process: subprocess.Popen[bytes], timeout: float = 180.0
) -> None:
    """Two service processes start slowly beside other test files: minutes, not the bench's 60 s."""
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, f"the service exited with {process.returncode}"
        with contextlib.suppress(httpx.HTTPError):
            if (await client.get("/readyz")).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"the service was not ready in {timeout}s")
        await asyncio.sleep(0.2)


async def test_ip_limit_is_not_multiplied_by_the_workers(
    postgres_url: str, vhost_url: str, tmp_path: Path
) -> None:
    await asyncio.to_thread(upgrade, postgres_url)
    port = free_port()
    env = {
        **os.environ,
        "NEWSLETTER_MODE": "demo",
        "NEWSLETTER_SECRET_KEY": secrets.token_urlsafe(48),
        "NEWSLETTER_DATABASE_URL": postgres_url,
        "NEWSLETTER_AMQP_URL": vhost_url,
        "NEWSLETTER_SUBSCRIPTION_PORT": str(port),
        "NEWSLETTER_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "NEWSLETTER_IP_LIMIT": "4",
        "NEWSLETTER_RESPONSE_FLOOR_S": "0",
        "NEWSLETTER_LOG_LEVEL": "WARNING",
    }
    process = _start_service(env, tmp_path / "service.log", workers=2)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            await _until_ready(client, process)
            fields = await _form_fields(client)
            codes: list[int] = []
            for i in range(12):
                # A new connection per post, so both workers get some of them.
                async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{port}", timeout=30, cookies=client.cookies
                ) as fresh:
                    answer = await fresh.post(
                        "/subscribe",
                        data={**fields, "email": f"ip-{i}@example.org", "languages": "en"},
                    )
                    codes.append(answer.status_code)
        assert codes.count(429) >= 8, codes
        assert set(codes) <= {200, 429}, codes
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
