"""The ops page on the real subscription app: login, sends, queues, errors, dead letters, rates.

The app (``create_app``) runs its real lifespan against a vhost of this module (so peeking at
dead letters cannot disturb other tests' queues) and a migrated SQLite or PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest

from services.subscription.app import create_app
from services.subscription.ops.passive_declares import read_by_declares
from shared.db.tables import BounceDecision, Delivery, Send
from shared.messaging import topology
from shared.settings import Settings, load_settings
from tests.support import infra
from tests.support.database import session_on, sessions_on

pytestmark = pytest.mark.integration

TOKEN = "ops-test-admin-token"
ALICE = "alice.liddell@mail.example.org"


@pytest.fixture(scope="module")
def ops_amqp_url() -> Iterator[str]:
    """A private vhost with the suite's topology: dead letters here are this module's own."""
    name, url = infra.declared_vhost(dead_letter_two_messages)
    try:
        yield url
    finally:
        infra.delete_vhost(name)


async def dead_letter_two_messages(channel: aio_pika.abc.AbstractChannel) -> None:
    """Reject two messages on a work queue: the broker dead-letters them with ``x-death``."""
    for n in range(2):
        await channel.default_exchange.publish(
            aio_pika.Message(b"{}", message_id=f"poison-{n}", type="send_controlled"),
            routing_key=topology.DISPATCHER_CONTROL.name,
        )
    queue = await channel.get_queue(topology.DISPATCHER_CONTROL.name)
    for _ in range(2):
        message = await queue.get(timeout=5)
        await message.reject(requeue=False)


@pytest.fixture
def ops_settings(ops_amqp_url: str, database_url: str, tmp_path: Path) -> Settings:
    return load_settings(
        mode="test",
        amqp_url=ops_amqp_url,
        database_url=database_url,
        var_dir=tmp_path,
        secret_key="ops-test-secret-" + "k" * 32,
        admin_token=TOKEN,
    )


@pytest.fixture
async def client(ops_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(ops_settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


async def seed(settings: Settings) -> str:
    """One running send: en 5 sent, 1 bounced, 2 queued; be 3 sent, 1 deferred; ru none."""
    send_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    async with session_on(settings.database_url) as session:
        session.add(Send(id=send_id, issue_key="2026-11-ops", languages="en,be,ru",
                         status="running", total=12))  # fmt: skip
        await session.flush()
        rows: list[tuple[str, str, dict[str, Any]]] = [
            *(("en", "sent", {"sent_at": now}) for _ in range(5)),
            (
                "en",
                "bounced",
                {"smtp_code": 550, "smtp_reply": f"5.1.1 <{ALICE}>: no such user"},
            ),
            *(("en", "queued", {}) for _ in range(2)),
            *(("be", "sent", {"sent_at": now}) for _ in range(3)),
            ("be", "deferred", {"smtp_code": 451, "smtp_reply": "4.7.1 greylisted"}),
        ]
        for n, (language, status, extra) in enumerate(rows):
            session.add(
                Delivery(
                    dedupe_key=f"send:{send_id}:{n}",
                    send_id=send_id,
                    subscriber_id=n,
                    email=ALICE if n == 5 else f"user{n}@example.com",
                    email_domain="mail.example.org" if n == 5 else "example.com",
                    language=language,
                    status=status,
                    attempts=1,
                    **extra,
                )
            )
        for bounce_class in ("hard", "complaint"):
            session.add(
                BounceDecision(
                    event_id=f"{send_id[:20]}-{bounce_class}",
                    email_hash="h" * 64,
                    email_domain="mail.example.org",
                    language="en",
                    bounce_class=bounce_class,
                    decision="suppressed",
                )
            )
        await session.commit()
    return send_id


def bearer() -> dict[str, str]:
    return {"authorization": f"Bearer {TOKEN}"}


async def test_without_the_token_the_page_offers_a_login_form(client: httpx.AsyncClient) -> None:
    response = await client.get("/admin")
    assert response.status_code == 401
    assert '<form method="post" action="/admin/login">' in response.text
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    russian = await client.get("/admin", headers={"accept-language": "ru-RU,ru;q=0.9"})
    assert '<html lang="ru">' in russian.text
    assert "Токен администратора" in russian.text
    assert "2026-11-ops" not in response.text
    assert (await client.get("/admin/summary.json")).status_code == 401
    assert (await client.get("/admin/sections")).status_code == 401
    wrong = await client.post("/admin/login", data={"token": "not-it"})
    assert wrong.status_code == 401
    assert "admin_token" not in wrong.headers.get("set-cookie", "")
    wrong_be = await client.post("/admin/login", data={"token": "not-it", "lang": "be"})
    assert wrong_be.status_code == 401
    assert '<html lang="be">' in wrong_be.text
    assert "Гэты токен няправільны." in wrong_be.text, "the answer keeps the form's language"


async def test_login_sets_a_strict_httponly_cookie_that_opens_the_page(
    client: httpx.AsyncClient, ops_settings: Settings
) -> None:
    send_id = await seed(ops_settings)
    login = await client.post("/admin/login", data={"token": TOKEN})
    assert login.status_code == 303
    assert login.headers["location"] == "/admin"
    cookie = login.headers["set-cookie"].lower()
    assert cookie.startswith("admin_token=")
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    page = await client.get("/admin")  # the client keeps the cookie
    assert page.status_code == 200
    assert f'data-send-id="{send_id}"' in page.text
    assert '<script src="/admin/ops.js" defer></script>' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert ALICE not in page.text, "addresses never reach the page"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    sections = await client.get("/admin/sections?lang=be")
    assert "Чэргі" in sections.text, "the refreshed sections keep the page's language"
    script = await client.get("/admin/ops.js")
    assert "/admin/sections" in script.text
    logout = await client.post("/admin/logout")
    assert logout.status_code == 303
    assert (await client.get("/admin")).status_code == 401, "signed out"


async def test_summary_reports_progress_errors_queues_dead_letters_and_rates(
    client: httpx.AsyncClient, ops_settings: Settings
) -> None:
    before = (await client.get("/admin/summary.json", headers=bearer())).json()
    send_id = await seed(ops_settings)
    summary = (await client.get("/admin/summary.json", headers=bearer())).json()

    (send,) = [s for s in summary["sends"] if s["send_id"] == send_id]
    assert send["in_progress"] is True
    languages = {lang["language"]: lang for lang in send["languages"]}
    assert list(languages) == ["en", "be", "ru"]
    assert languages["en"]["counts"] == {"bounced": 1, "queued": 2, "sent": 5}
    assert languages["en"]["percent"] == 75.0
    assert languages["en"]["rate_per_min"] == 1.0, "5 sent in the last 5 minutes"
    assert languages["en"]["eta_s"] == 120, "2 left at 1 a minute"
    assert languages["be"]["eta_s"] == 100, "1 deferred left at 3 per 5 minutes"
    assert languages["be"]["counts"] == {"deferred": 1, "sent": 3}
    assert languages["ru"]["total"] == 0

    mine = [e for e in summary["errors"] if e["send_id"] == send_id]
    assert {e["status"] for e in mine} == {"bounced", "deferred"}
    bounced = next(e for e in mine if e["status"] == "bounced")
    assert bounced["domain"] == "mail.example.org"
    assert bounced["smtp_code"] == 550
    assert "no such user" in bounced["smtp_reply"]
    assert ALICE not in str(summary), "the address in the SMTP reply is masked"

    queues = {q["name"]: q for q in summary["queues"]["queues"]}
    assert set(queues) == set(topology.all_queue_names())
    assert summary["queues"]["source"] == "amqp", "no management plugin here: passive declares"
    assert queues[topology.DEAD_LETTER_QUEUE]["ready"] == 2
    assert queues[topology.SUBSCRIPTION_FEEDBACK.name]["consumers"] == 1, "the app's consumer"

    letters = summary["dead_letters"]
    assert sorted(d["message_id"] for d in letters) == ["poison-0", "poison-1"]
    assert {d["reason"] for d in letters} == {"rejected"}
    assert {d["from_queue"] for d in letters} == {topology.DISPATCHER_CONTROL.name}

    day_before, day_after = before["reputation"][0], summary["reputation"][0]
    assert day_after["window_hours"] == 24
    assert day_after["sent"] - day_before["sent"] == 8
    assert day_after["hard_bounces"] - day_before["hard_bounces"] == 1
    assert day_after["complaints"] - day_before["complaints"] == 1


async def test_peeking_leaves_dead_letters_in_their_queue(
    client: httpx.AsyncClient, ops_amqp_url: str
) -> None:
    summary = (await client.get("/admin/summary.json", headers=bearer())).json()
    assert len(summary["dead_letters"]) == 2
    connection = await aio_pika.connect(ops_amqp_url)
    try:
        # A quorum queue takes peeked messages back through its log: wait for that, briefly.
        for _ in range(300):
            snapshot = await read_by_declares(connection, [topology.DEAD_LETTER_QUEUE])
            if snapshot.queues[0].ready == 2:
                break
            await asyncio.sleep(0.1)
    finally:
        await connection.close()
    (stat,) = snapshot.queues
    assert stat.ready == 2, "the page must not consume dead letters"


async def test_queue_gauges_are_exported_on_metrics(client: httpx.AsyncClient) -> None:
    await client.get("/admin/sections", headers=bearer())
    metrics = (await client.get("/metrics")).text
    line = f'newsletter_queue_messages{{queue="{topology.DEAD_LETTER_QUEUE}",state="ready"}} 2.0'
    assert line in metrics
    assert (
        f'newsletter_queue_consumers{{queue="{topology.SUBSCRIPTION_FEEDBACK.name}"}} 1.0'
        in metrics
    )


async def test_the_warm_up_ramp_of_a_new_sending_domain_is_shown(
    client: httpx.AsyncClient, ops_settings: Settings
) -> None:
    """Issue 17: the ramp shows on the ops page (and in its JSON) as in ``send status``."""
    from datetime import timedelta

    from shared.db.tables.deliveries import WarmupDomain

    domain = ops_settings.sender.domain.lower()
    async with sessions_on(ops_settings.database_url) as sessions:
        started = datetime.now(UTC).date() - timedelta(days=1)  # day 2 of the ramp
        try:
            async with sessions() as session:
                session.add(WarmupDomain(domain=domain, started_on=started, caps="50,100,200"))
                await session.commit()
            summary = (await client.get("/admin/summary.json", headers=bearer())).json()
            ramp = summary["warmup"]
            assert (ramp["domain"], ramp["day"], ramp["caps"], ramp["cap_today"]) == (
                domain,
                2,
                [50, 100, 200],
                100,
            )
            page = await client.get("/admin?lang=be", headers=bearer())
            assert page.status_code == 200
            assert f"Разагрэў {domain}" in page.text
            assert "Дзень 2 з 3" in page.text
        finally:
            async with sessions() as session:
                row = await session.get(WarmupDomain, domain)
                if row is not None:
                    await session.delete(row)
                    await session.commit()
    summary = (await client.get("/admin/summary.json", headers=bearer())).json()
    assert summary["warmup"] is None, "a domain not marked new shows no ramp"
