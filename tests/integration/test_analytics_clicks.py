"""Tracked links end to end (issue 18): an issue rendered by the renderer, sent by the
dispatcher to a real SMTP server over a socket, each language's mail opened and its tracked
link followed through the public origin (the subscription app forwarding to the renderer),
then the counts read back in the report. HEAD, a scanner and a burst are not counted; a
tampered token never redirects; no table of this feature has a column naming a reader."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.renderer.analytics_report import issue_report
from tests.support import dispatch_seed
from tests.support.analytics_stack import (
    analytics_stack,
    database_sessions,  # noqa: F401 - the sessions fixture
    tracked_links,
)
from tests.support.database import column_names

pytestmark = pytest.mark.integration

LINKS = {
    "one": "https://example.net/analysis/one?lang=x&y=1",
    "two": "https://example.net/analysis/two",
}
EXTRA = f"\n\nFurther reading: [one]({LINKS['one']}) and [two]({LINKS['two']}).\n"
OSCE = "https://www.osce.org/forum-for-security-cooperation"
READER = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0 reader-{}"
SANDBOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120 Safari/537.36"


async def test_a_reader_in_each_language_is_counted_and_machines_are_not(
    vhost_url: str,
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    number = random.randint(20_000, 60_000)
    mine = await dispatch_seed.add_subscribers(sessions, 2, prefix=f"clicker{number}")
    async with analytics_stack(vhost_url, database_url, tmp_path) as stack:
        by_rcpt = await stack.send_issue(sessions, number=number, extra=EXTRA)
        send_id = stack.last_send_id
        client, base = stack.client, stack.base
        links: dict[str, list[str]] = {}
        for lang in ("en", "be", "ru"):
            reader = next(a for a in mine if f"-{lang}-0@" in a)
            assert reader in by_rcpt, f"the {lang} reader got no mail"
            in_html, in_text = tracked_links(by_rcpt[reader], base=base, lang=lang)
            assert len(in_html) == 3, f"{lang}: three article links, got {in_html}"
            assert in_text == in_html, f"{lang}: the plain part links the same way"
            links[lang] = in_html
            # The reader follows the second link of the article ("one").
            answer = await client.get(
                in_html[1].removeprefix(base), headers={"user-agent": READER.format(lang)}
            )
            assert answer.status_code == 302, answer.text
            assert answer.headers["location"] == LINKS["one"]
            assert "no-store" in answer.headers.get("cache-control", "")
        en = [link.removeprefix(base) for link in links["en"]]
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
        # A changed character of the MAC (not the last one, whose unused bits make most
        # changes a non-canonical spelling, refused before its payload is even read).
        forged = token[:15] + ("A" if token[15] != "A" else "B") + token[16:]
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
        with_ref = await client.get(f"{en[0]}/AQAAAAAAAQAAAAAAAAAAAA")
        assert with_ref.status_code == 404, "no per-delivery reference route with the mode off"
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
    async with analytics_stack(vhost_url, database_url, tmp_path) as stack:
        by_rcpt = await stack.send_issue(sessions, number=number, extra=EXTRA, tracking=False)
    for lang in ("en", "be", "ru"):
        mail = by_rcpt[next(a for a in mine if f"-{lang}-0@" in a)]
        assert tracked_links(mail, base=stack.base, lang=lang) == ([], [])
        html = mail.get_body(("html",))
        assert html is not None
        assert LINKS["two"] in html.get_content()
    report = await issue_report(sessions, issue=number)
    assert report.articles == []
    assert report.clicks == 0


READER_WORDS = ("subscriber", "email", "address", "delivery", "recipient", "client", "ip")


async def test_no_table_of_the_feature_has_a_column_naming_a_reader(database_url: str) -> None:
    columns = await column_names(database_url, "tracked_link", "link_click")
    assert columns["link_click"], "the migration created link_click"
    offenders = [
        f"{table}.{name}"
        for table, names in columns.items()
        for name in names
        if any(word in name.lower().split("_") or word in name.lower() for word in READER_WORDS)
    ]
    assert not offenders, f"aggregate tables must not name a reader: {offenders}"
