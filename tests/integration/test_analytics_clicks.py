"""Tracked links end to end (issue 18): an issue rendered by the renderer, sent by the
dispatcher to a real SMTP server over a socket, each language's mail opened and its tracked
link followed through the public origin (the subscription app forwarding to the renderer),
then the counts read back in the report. HEAD, a scanner and a burst are not counted; a
tampered token never redirects; no table of this feature has a column naming a reader."""

from __future__ import annotations

import contextlib
import random
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import EmailMessage
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

SECRET = "analytics-secret-" + "a" * 32
LINKS = {
    "one": "https://example.net/analysis/one?lang=x&y=1",
    "two": "https://example.net/analysis/two",
}
EXTRA = f"\n\nFurther reading: [one]({LINKS['one']}) and [two]({LINKS['two']}).\n"
OSCE = "https://www.osce.org/forum-for-security-cooperation"
READER = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0 reader-{}"
SANDBOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120 Safari/537.36"


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(database_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


@dataclass
class Site:
    base: str


@contextlib.asynccontextmanager
async def public_site(amqp_url: str, database_url: str, tmp_path: Path) -> AsyncIterator[Site]:
    """The renderer (with its click counter) behind the subscription app, the public origin.

    The burst window is long (two minutes) so that no assertion depends on how fast this
    machine answers; the counter counts the clicks it holds when the renderer stops."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = load_settings(
        mode="test",
        amqp_url=amqp_url,
        database_url=database_url,
        var_dir=tmp_path,
        public_url=base,
        secret_key=SECRET,
        admin_token="analytics-admin",
        click_flush_s=0.2,
        click_burst_window_s=120.0,
    )
    async with running_renderer(settings, tmp_path) as renderer:
        public = settings.model_copy(
            update={"renderer_probe_port": renderer.settings.renderer_probe_port}
        )
        policy = SignupPolicy(signup_min_seconds=0.0, response_floor_s=0.0, ip_limit=100)
        server = ProbeServer(create_app(public, policy=policy), host="127.0.0.1", port=port)
        await server.start()
        try:
            yield Site(base)
        finally:
            await server.stop()


def tracked_links(mail: EmailMessage, *, base: str, lang: str) -> tuple[list[str], list[str]]:
    html = mail.get_body(("html",))
    text = mail.get_body(("plain",))
    assert html is not None
    assert text is not None
    pattern = re.escape(f"{base}/{lang}/r/") + r"[A-Za-z0-9_-]+"
    in_html = list(dict.fromkeys(re.findall(pattern, html.get_content())))
    in_text = list(dict.fromkeys(re.findall(pattern, text.get_content())))
    return in_html, in_text


def issue_sources(number: int) -> dict[str, str]:
    return {
        lang: text.replace("issue: 50\n", f"issue: {number}\n").rstrip("\n") + EXTRA
        for lang, text in sample_sources("en", "be", "ru").items()
    }


async def test_a_reader_in_each_language_is_counted_and_machines_are_not(
    vhost_url: str,
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    number = random.randint(20_000, 60_000)
    mine = await dispatch_seed.add_subscribers(sessions, 2, prefix=f"clicker{number}")
    send_id = str(uuid.uuid4())
    with ScriptedMta() as mta:
        dispatcher = dispatch_seed.make_settings(
            amqp_url=vhost_url, database_url=database_url, smtp_url=mta.url, tmp_path=tmp_path
        )
        async with (
            public_site(vhost_url, database_url, tmp_path) as site,
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
            async with httpx.AsyncClient(base_url=site.base, timeout=15.0) as client:
                links: dict[str, list[str]] = {}
                for lang in ("en", "be", "ru"):
                    reader = next(a for a in mine if f"-{lang}-0@" in a)
                    assert reader in by_rcpt, f"the {lang} reader got no mail"
                    in_html, in_text = tracked_links(by_rcpt[reader], base=site.base, lang=lang)
                    assert len(in_html) == 3, f"{lang}: three article links, got {in_html}"
                    assert in_text == in_html, f"{lang}: the plain part links the same way"
                    links[lang] = in_html
                    # The reader follows the second link of the article ("one").
                    answer = await client.get(
                        in_html[1].removeprefix(site.base),
                        headers={"user-agent": READER.format(lang)},
                    )
                    assert answer.status_code == 302, answer.text
                    assert answer.headers["location"] == LINKS["one"]
                    assert "no-store" in answer.headers.get("cache-control", "")
                en = [link.removeprefix(site.base) for link in links["en"]]
                head = await client.head(en[0], headers={"user-agent": READER.format("head")})
                assert head.status_code == 302
                assert head.headers["location"] == OSCE
                scanner = await client.get(en[2], headers={"user-agent": "Mimecast URL Protect"})
                assert scanner.headers["location"] == LINKS["two"]
                prefetch = await client.get(en[2], headers={"sec-purpose": "prefetch"})
                assert prefetch.status_code == 302
                for path in en:  # a sandbox with a browser's User-Agent follows every link
                    assert (await client.get(path, headers={"user-agent": SANDBOX})).is_redirect
                token = en[0].rsplit("/", 1)[1]
                forged = token[:-1] + ("A" if token[-1] != "A" else "B")
                damaged = await client.get(f"/en/r/{forged}")
                assert damaged.status_code == 400
                assert "location" not in damaged.headers, "a tampered token never redirects"
                assert f"<code>{OSCE}</code>" in damaged.text, "our own target, as text"
                assert f'href="{OSCE}"' not in damaged.text
                page = await client.get(f"/ru/issues/{number}")
                assert page.status_code == 200
                assert "/ru/r/" not in page.text, "the archive's web page is not counted"
                assert f'href="{LINKS["two"]}"' in page.text
                garbage = await client.get("/be/r/not-a-token")
                assert garbage.status_code == 400
                assert "location" not in garbage.headers
    # The renderer has stopped: its last flush wrote every count it held.
    report = await issue_report(sessions, issue=number)
    delivered = await dispatch_seed.status_counts(sessions, send_id)
    [article] = report.articles
    assert article.key == "minsk-escalation"
    assert article.clicks == {"en": 1, "be": 1, "ru": 1}, report.text()
    assert article.filtered["en"] == {"head": 1, "scanner": 1, "prefetch": 1, "burst": 3}
    assert "be" not in article.filtered
    assert "ru" not in article.filtered
    assert report.clicks == 3
    editions = {e.edition: e for e in report.per_edition}
    assert sum(e.delivered for e in editions.values()) == delivered["sent"]
    assert all(editions[lang].delivered >= 2 for lang in ("en", "be", "ru"))
    for lang in ("en", "be", "ru"):
        assert article.share[lang] == round(1 / editions[lang].delivered, 4)
    rows = report.csv().splitlines()
    assert rows[0].startswith("issue,article,title,edition,clicks,delivered,share")
    assert len(rows) == 4


async def test_a_send_without_tracking_links_straight_to_the_targets(
    vhost_url: str,
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    number = random.randint(60_001, 65_000)
    mine = await dispatch_seed.add_subscribers(sessions, 1, prefix=f"untracked{number}")
    send_id = str(uuid.uuid4())
    with ScriptedMta() as mta:
        dispatcher = dispatch_seed.make_settings(
            amqp_url=vhost_url, database_url=database_url, smtp_url=mta.url, tmp_path=tmp_path
        )
        async with (
            public_site(vhost_url, database_url, tmp_path) as site,
            dispatch_seed.RunningDispatcher(dispatcher),
        ):
            await dispatch_seed.publish(
                vhost_url,
                RenderIssue(
                    send_id=send_id,
                    issue_key=f"issue-{number}",
                    sources=issue_sources(number),
                    segments=["en", "be", "ru"],
                    tracking=False,
                ),
                routing_key=RENDER_ISSUE,
            )
            await dispatch_seed.wait_for_send(sessions, send_id, timeout=120)
            by_rcpt = {a.rcpt: a.parsed() for a in mta.handler.accepted}
    for lang in ("en", "be", "ru"):
        mail = by_rcpt[next(a for a in mine if f"-{lang}-0@" in a)]
        assert tracked_links(mail, base=site.base, lang=lang) == ([], [])
        html = mail.get_body(("html",))
        assert html is not None
        assert LINKS["two"] in html.get_content()
    report = await issue_report(sessions, issue=number)
    assert report.articles == []
    assert report.clicks == 0


READER_WORDS = ("subscriber", "email", "address", "delivery", "recipient", "client", "ip")


async def test_no_table_of_the_feature_has_a_column_naming_a_reader(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            columns = await conn.run_sync(
                lambda sync: {
                    table: [c["name"] for c in inspect(sync).get_columns(table)]
                    for table in ("tracked_link", "link_click")
                }
            )
    finally:
        await engine.dispose()
    assert columns["link_click"], "the migration created link_click"
    offenders = [
        f"{table}.{name}"
        for table, names in columns.items()
        for name in names
        if any(word in name.lower().split("_") or word in name.lower() for word in READER_WORDS)
    ]
    assert not offenders, f"aggregate tables must not name a reader: {offenders}"
