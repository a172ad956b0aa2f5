"""Helpers of the subscription service's integration tests (not a test module itself).

The subscription tests publish mail commands; to keep them away from other engineers' tests
(which may run a renderer on the session's vhost), they use a private RabbitMQ vhost of their
own and read the ``RenderTransactional`` commands off its real ``renderer.transactional`` queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from fastapi import FastAPI

from newsletter_cli.forms import Form, find_forms
from services.subscription.app import create_app
from services.subscription.policy import SignupPolicy
from shared.messaging.schemas import RenderTransactional, decode
from shared.messaging.topology import RENDERER_TRANSACTIONAL, connect
from shared.settings import Settings, load_settings
from tests.support import infra

PUBLIC_URL = "http://subscription.test"
ADMIN_TOKEN = "subscription-admin-token"
QUICK = SignupPolicy(
    signup_min_seconds=0.0, response_floor_s=0.0, ip_limit=10_000, confirmation_interval_s=3600
)


@pytest.fixture(scope="module")
def private_amqp_url() -> Iterator[str]:
    name, url = infra.declared_vhost()
    try:
        yield url
    finally:
        infra.delete_vhost(name)


def settings_for(amqp_url: str, database_url: str, tmp_path: Path) -> Settings:
    return load_settings(
        mode="test",
        amqp_url=amqp_url,
        database_url=database_url,
        var_dir=tmp_path,
        public_url=PUBLIC_URL,
        secret_key="subscription-test-secret-" + "k" * 32,
        admin_token=ADMIN_TOKEN,
    )


def unique_address(label: str = "reader", domain: str = "example.org") -> str:
    return f"{label}.{uuid.uuid4().hex[:12]}@{domain}"


@dataclass
class CommandTap:
    """Collects the RenderTransactional commands published on the private vhost."""

    connection: AbstractRobustConnection
    seen: list[RenderTransactional] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        async with message.process(requeue=False):
            self.seen.append(decode(RenderTransactional, message.body))
            self.arrived.set()

    def for_address(self, to: str, kind: str | None = None) -> list[RenderTransactional]:
        return [m for m in self.seen if m.to == to and (kind is None or m.kind == kind)]

    async def wait_for(
        self, to: str, kind: str, *, count: int = 1, timeout: float = 10.0
    ) -> list[RenderTransactional]:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.for_address(to, kind)) < count:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(
                    f"expected {count} {kind} command(s) for {to}, got "
                    f"{[(m.kind, m.to) for m in self.seen if m.to == to]}"
                )
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), remaining)
        return self.for_address(to, kind)

    async def settle(self, seconds: float = 0.3) -> None:
        """Give any command that is still in flight time to arrive."""
        await asyncio.sleep(seconds)


@contextlib.asynccontextmanager
async def command_tap(amqp_url: str) -> AsyncIterator[CommandTap]:
    connection = await connect(amqp_url)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=100)
        queue = await channel.get_queue(RENDERER_TRANSACTIONAL.name, ensure=True)
        await queue.purge()
        tap = CommandTap(connection=connection)
        tag = await queue.consume(tap._on_message)
        try:
            yield tap
        finally:
            await queue.cancel(tag)
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def running_app(
    settings: Settings, policy: SignupPolicy = QUICK
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The real app with its real lifespan (database, RabbitMQ), reached through ASGI."""
    app = create_app(settings, policy=policy)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url=PUBLIC_URL) as client:
            yield app, client


def signup_form(html: str) -> Form:
    forms = [f for f in find_forms(html, base_url=PUBLIC_URL + "/") if f.method == "post"]
    assert forms, "the signup page has no POST form"
    return forms[0]


def only_form(html: str, action_part: str) -> Form:
    forms = [
        f
        for f in find_forms(html, base_url=PUBLIC_URL + "/")
        if f.method == "post" and action_part in f.action
    ]
    assert len(forms) == 1, f"expected one POST form to {action_part}, found {len(forms)}"
    return forms[0]


def as_multi(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name, []).append(value)
    return grouped


async def sign_up(
    client: httpx.AsyncClient,
    email: str,
    *,
    lang: str = "en",
    languages: tuple[str, ...] | None = None,
    extra: dict[str, str] | None = None,
) -> httpx.Response:
    page = await client.get("/", params={"lang": lang})
    assert page.status_code == 200, page.text
    form = signup_form(page.text)
    pairs = form.filled(
        {"email": email, **(extra or {})}, check={"languages": set(languages or (lang,))}
    )
    # The form pre-ticks the page language; keep only the editions asked for.
    pairs = [(k, v) for k, v in pairs if k != "languages" or v in set(languages or (lang,))]
    return await client.post(form.action, data=as_multi(pairs))


async def follow_form(
    client: httpx.AsyncClient, url: str, action_part: str, extra: dict[str, str] | None = None
) -> httpx.Response:
    """GET a link's page, then POST its one form (with CSRF) like a browser without JS."""
    page = await client.get(url)
    assert page.status_code == 200, f"{url}: {page.status_code} {page.text[:300]}"
    form = only_form(page.text, action_part)
    return await client.post(form.action, data=as_multi(form.filled(extra or {})))
