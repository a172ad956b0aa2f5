"""The open pixel end to end (issue 18): with ``NEWSLETTER_OPEN_TRACKING=true`` an issue sent
by the dispatcher to a real SMTP server carries one pixel per edition in its HTML part; loads
through the public origin are counted per edition and verdict (a mail program, Gmail's proxy,
an Apple preload, a HEAD and a scanner apart); a forged token counts nothing; the archive's
web page has no pixel. With the setting off (the default) no mail has a pixel and the route
does not exist. No column of ``mail_open`` names a reader."""

from __future__ import annotations

import contextlib
import random
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.renderer.analytics_report import issue_report
from services.subscription.app import create_app
from services.subscription.policy import SignupPolicy
from shared.db.engine import create_engine, session_factory
from shared.messaging.schemas import RenderIssue
from shared.messaging.topology import RENDER_ISSUE
from shared.probes import ProbeServer
from shared.settings import load_settings
from tests.integration.renderer_harness import running_renderer, sample_sources
from tests.support import dispatch_seed
from tests.support.ports import free_port
from tests.support.test_mta import ScriptedMta

pytestmark = pytest.mark.integration

SECRET = "opens-secret-" + "o" * 32
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Thunderbird/115.0"
GMAIL = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(database_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def public_site(
    amqp_url: str, database_url: str, tmp_path: Path, *, open_tracking: bool
) -> AsyncIterator[str]:
    """The renderer behind the subscription app (the public origin); yields the base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = load_settings(
        mode="test",
        amqp_url=amqp_url,
        database_url=database_url,
        var_dir=tmp_path,
        public_url=base,
        secret_key=SECRET,
        admin_token="opens-admin",
        click_flush_s=0.2,
        open_tracking=open_tracking,
    )
    async with running_renderer(settings, tmp_path) as renderer:
        public = settings.model_copy(
            update={"renderer_probe_port": renderer.settings.renderer_probe_port}
        )
        policy = SignupPolicy(signup_min_seconds=0.0, response_floor_s=0.0, ip_limit=100)
        server = ProbeServer(create_app(public, policy=policy), host="127.0.0.1", port=port)
        await server.start()
        try:
            yield base
        finally:
            await server.stop()


def issue_sources(number: int) -> dict[str, str]:
    return {
        lang: text.replace("issue: 50\n", f"issue: {number}\n")
        for lang, text in sample_sources("en", "be", "ru").items()
    }


async def test_with_the_setting_on_each_edition_s_pixel_is_counted_by_verdict(
    vhost_url: str,
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    number = random.randint(20_000, 60_000)
    mine = await dispatch_seed.add_subscribers(sessions, 1, prefix=f"opener{number}")
    send_id = str(uuid.uuid4())
    with ScriptedMta() as mta:
        dispatcher = dispatch_seed.make_settings(
            amqp_url=vhost_url, database_url=database_url, smtp_url=mta.url, tmp_path=tmp_path
        )
        async with (
            public_site(vhost_url, database_url, tmp_path, open_tracking=True) as base,
            dispatch_seed.RunningDispatcher(dispatcher),
        ):
            await dispatch_seed.publish(
                vhost_url,
                RenderIssue(
                    send_id=send_id,
                    issue_key=f"issue-{number}",
                    sources=issue_sources(number),
                    segments=["en", "be", "ru"],
                ),
                routing_key=RENDER_ISSUE,
            )
            await dispatch_seed.wait_for_send(sessions, send_id, timeout=120)
            by_rcpt = {a.rcpt: a.parsed() for a in mta.handler.accepted}
            pixels: dict[str, str] = {}
            for lang in ("en", "be", "ru"):
                mail = by_rcpt[next(a for a in mine if f"-{lang}-0@" in a)]
                html, text = mail.get_body(("html",)), mail.get_body(("plain",))
                assert html is not None
                assert text is not None
                found = re.findall(
                    re.escape(f"{base}/{lang}/o/") + r"[A-Za-z0-9_-]+\.gif", html.get_content()
                )
                assert len(found) == 1, f"{lang}: one pixel in the HTML part, got {found}"
                assert "/o/" not in text.get_content(), f"{lang}: none in the plain part"
                pixels[lang] = found[0].removeprefix(base)
            async with httpx.AsyncClient(base_url=base, timeout=15.0) as client:
                for path in pixels.values():
                    answer = await client.get(path, headers={"user-agent": FIREFOX})
                    assert answer.status_code == 200
                    assert answer.headers["content-type"] == "image/gif"
                    assert answer.content.startswith(b"GIF89a")
                    assert "no-store" in answer.headers["cache-control"]
                be = pixels["be"]
                assert (await client.get(be, headers={"user-agent": GMAIL})).status_code == 200
                assert (await client.get(be, headers={"user-agent": "Mozilla/5.0"})).is_success
                assert (await client.head(be, headers={"user-agent": FIREFOX})).is_success
                scanner = await client.get(be, headers={"user-agent": "Proofpoint URL Defense"})
                assert scanner.is_success
                token = be.rsplit("/", 1)[1].removesuffix(".gif")
                forged = token[:-1] + ("A" if token[-1] != "A" else "B")
                answer = await client.get(f"/be/o/{forged}.gif", headers={"user-agent": FIREFOX})
                assert answer.status_code == 200, "a forged pixel still shows, and counts nothing"
                page = await client.get(f"/be/issues/{number}")
                assert page.status_code == 200
                assert "/be/o/" not in page.text, "the archive's web page has no pixel"
    report = await issue_report(sessions, issue=number)
    assert report.open_tracking
    editions = {e.edition: e for e in report.per_edition}
    assert (editions["en"].loads, editions["ru"].loads) == (1, 1), report.text()
    assert editions["be"].loads == 2, "Thunderbird and Gmail's proxy"
    assert editions["be"].gmail_proxy == 1
    assert editions["be"].apple_preloads == 1
    assert editions["be"].loads_filtered == 2, "the HEAD and the scanner"
    assert report.loads == 4
    assert "machine-inflated" in report.text()


async def test_with_the_setting_off_no_mail_has_a_pixel_and_there_is_no_route(
    vhost_url: str,
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    number = random.randint(60_001, 65_000)
    mine = await dispatch_seed.add_subscribers(sessions, 1, prefix=f"noopen{number}")
    send_id = str(uuid.uuid4())
    with ScriptedMta() as mta:
        dispatcher = dispatch_seed.make_settings(
            amqp_url=vhost_url, database_url=database_url, smtp_url=mta.url, tmp_path=tmp_path
        )
        async with (
            public_site(vhost_url, database_url, tmp_path, open_tracking=False) as base,
            dispatch_seed.RunningDispatcher(dispatcher),
        ):
            await dispatch_seed.publish(
                vhost_url,
                RenderIssue(
                    send_id=send_id,
                    issue_key=f"issue-{number}",
                    sources=issue_sources(number),
                    segments=["en", "be", "ru"],
                ),
                routing_key=RENDER_ISSUE,
            )
            await dispatch_seed.wait_for_send(sessions, send_id, timeout=120)
            by_rcpt = {a.rcpt: a.parsed() for a in mta.handler.accepted}
            async with httpx.AsyncClient(base_url=base, timeout=15.0) as client:
                answer = await client.get("/en/o/AAAAAAAAAAAAAAAA.gif")
                assert answer.status_code == 404, "no pixel route with the setting off"
    for lang in ("en", "be", "ru"):
        mail = by_rcpt[next(a for a in mine if f"-{lang}-0@" in a)]
        html = mail.get_body(("html",))
        assert html is not None
        content = html.get_content()
        assert f"/{lang}/o/" not in content, f"{lang}: no pixel without the setting"
        assert 'width="1"' not in content
    report = await issue_report(sessions, issue=number)
    assert not report.open_tracking
    assert "machine-inflated" not in report.text()


async def test_mail_open_has_no_column_naming_a_reader(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            names = await conn.run_sync(
                lambda sync: [c["name"] for c in inspect(sync).get_columns("mail_open")]
            )
    finally:
        await engine.dispose()
    assert names == ["issue_number", "edition", "day", "verdict", "count"], names
