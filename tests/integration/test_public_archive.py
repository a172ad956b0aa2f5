"""The archive as readers meet it, over real HTTP on the one public origin.

The subscription app listens on ``NEWSLETTER_PUBLIC_URL`` and forwards the archive's paths to
the renderer's internal port; the issues are rendered by the renderer's consumer from the sample
issue (as issues 50 and 51, a resend of 51, and a test send of 52) into SQLite.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from xml.etree import ElementTree

import httpx
import pytest
from sqlmodel import select

from services.renderer.catalogs import Templates
from shared.db.engine import create_engine, session_factory
from shared.db.tables import Edition
from shared.settings import DEFAULT_PITCH, load_settings
from tests.integration.public_site import PublicSite, running_public_site

pytestmark = pytest.mark.integration

WEEKS = {
    "en": ("Issue 51 · December 20 – 26, 2021", "Issue 50 · December 13 – 19, 2021"),
    "be": ("Выпуск 51 · 20–26 снежня 2021", "Выпуск 50 · 13–19 снежня 2021"),
    "ru": ("Выпуск 51 · 20–26 декабря 2021", "Выпуск 50 · 13–19 декабря 2021"),
}
NAMES = {"en": "English", "be": "Беларуская", "ru": "Русский"}
SECTION = {"en": "Security issues", "be": "Пытанні бяспекі", "ru": "Вопросы безопасности"}
NOT_FOUND = {"en": "Page not found", "be": "Старонка не знойдзена", "ru": "Страница не найдена"}
ATOM = {"a": "http://www.w3.org/2005/Atom"}
SITEMAP = {"s": "http://www.sitemaps.org/schemas/sitemap/0.9", "x": "http://www.w3.org/1999/xhtml"}


@pytest.fixture
async def site(vhost_url: str, sqlite_url: str, tmp_path: Path) -> AsyncIterator[PublicSite]:
    async with running_public_site(vhost_url, sqlite_url, tmp_path) as running:
        running.sends = {
            "50": await running.send(50, "2021-12-13 .. 2021-12-19"),
            "51": await running.send(51, "2021-12-20 .. 2021-12-26"),
            "51-again": await running.send(51, "2021-12-20 .. 2021-12-26", intent="resend_all"),
            "52-test": await running.send(
                52, "2021-12-27 .. 2022-01-02", test_to="editor@example.org"
            ),
        }
        yield running


def flat(html: str) -> str:
    return " ".join(html.split())


def hrefs(html: str) -> list[str]:
    return re.findall(r'href="([^"]+)"', html)


async def test_each_language_lists_each_issue_once_newest_first_by_number_and_week(
    site: PublicSite,
) -> None:
    async with site.client() as client:
        pages = {lang: await client.get(f"/{lang}/") for lang in ("en", "be", "ru")}
    for lang, response in pages.items():
        assert response.status_code == 200, response.text
        page = flat(response.text)
        newest, older = WEEKS[lang]
        assert page.count(newest) == 1, f"{lang}: issue 51 once, whatever its sends"
        assert page.index(newest) < page.index(older), f"{lang}: newest first"
        assert "52" not in re.sub(r"<[^>]+>", " ", page).split(), "a test send never appears"
        assert "/issues/52" not in page
        assert f'<html lang="{lang}"' in page
        assert SECTION[lang] in page, "sections are listed"
        assert page.count(f'href="{site.base}/{lang}/issues/51#minsk-escalation"') == 1
        assert f'<link rel="canonical" href="{site.base}/{lang}/">' in page
        for other, name in NAMES.items():
            assert f'<link rel="alternate" hreflang="{other}" href="{site.base}/{other}/">' in page
            named = re.search(f'hreflang="{other}"[^>]*>{name}</a>', page)
            assert named, "language names as their speakers write them"
        assert f'href="{site.base}/?lang={lang}"' in page, "the subscribe box"
        assert DEFAULT_PITCH[lang] in page
        for link in hrefs(page):
            assert link.startswith((site.base + "/", "#")), f"{link} leaves the public origin"
        assert f":{site.renderer_port}" not in page


async def test_an_issue_page_holds_no_mail_only_part_and_ends_with_a_subscribe_box(
    site: PublicSite,
) -> None:
    templates = Templates()
    async with site.client() as client:
        response = await client.get("/be/issues/51")
        signup = await client.get(f"{site.base}/?lang=be")
    assert response.status_code == 200
    page = flat(response.text)
    assert WEEKS["be"][0] in page
    assert "Мінск спрабуе сысці з расійскага цягніка эскалацыі" in page
    assert "Пытанні бяспекі" in page
    for mail_only in ("View in browser", "Unsubscribe", "Change your preferences"):
        assert templates.gettext("be", mail_only) not in page, mail_only
    footer = templates.gettext(
        "be",
        "You receive this mail because %(address)s subscribed to the Weekly Digest.",
        address="",
    )
    assert footer.split(",")[0] not in page, "no 'you receive this mail because' footer"
    assert "@@NL_" not in page
    assert "unsubscribe" not in page.lower()
    assert f'<link rel="canonical" href="{site.base}/be/issues/51">' in page
    for other in ("en", "ru"):
        assert (
            f'<link rel="alternate" hreflang="{other}" href="{site.base}/{other}/issues/51">'
            in page
        )
        assert f'<a href="{site.base}/{other}/issues/51" lang="{other}"' in page
    box = page[page.index('class="card subscribe"') :]
    assert "Падпішыцеся на нашу рассылку" in box
    assert f'href="{site.base}/?lang=be"' in box, "links the signup form in the page's language"
    assert page.rindex("Мінск") < page.index('class="card subscribe"'), "the box comes last"
    assert signup.status_code == 200, "the box's link works"
    assert 'name="email"' in signup.text
    assert response.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    internal = [link for link in hrefs(page) if f":{site.renderer_port}" in link]
    assert not internal, "no link points at the renderer's internal port"
    assert not [link for link in hrefs(page) if link.startswith("/")], "links are absolute"


async def test_feeds_and_the_sitemap_list_published_issues_only(site: PublicSite) -> None:
    async with site.client() as client:
        feed = await client.get("/ru/feed.atom")
        sitemap = await client.get("/sitemap.xml")
    assert feed.headers["content-type"].startswith("application/atom+xml")
    entries = ElementTree.fromstring(feed.content).findall("a:entry", ATOM)
    assert [e.findtext("a:id", namespaces=ATOM) for e in entries] == [
        f"{site.base}/ru/issues/51",
        f"{site.base}/ru/issues/50",
    ]
    assert str(entries[0].findtext("a:title", namespaces=ATOM)).startswith(WEEKS["ru"][0])
    assert sitemap.headers["content-type"].startswith("application/xml")
    urls = ElementTree.fromstring(sitemap.content).findall("s:url", SITEMAP)
    locs = {u.findtext("s:loc", namespaces=SITEMAP) for u in urls}
    expected = {f"{site.base}/{lang}/" for lang in NAMES} | {
        f"{site.base}/{lang}/issues/{n}" for lang in NAMES for n in (50, 51)
    }
    assert locs == expected, "every page once, no test send"
    for url in urls:
        alternates = url.findall("x:link", SITEMAP)
        assert {a.get("hreflang") for a in alternates} == set(NAMES)


async def test_unknown_pages_answer_404_in_the_readers_language(site: PublicSite) -> None:
    async with site.client() as client:
        for lang in NAMES:
            for path in (f"/{lang}/issues/999", f"/{lang}/no-such-page", f"/{lang}/issues/52"):
                response = await client.get(path)
                assert response.status_code == 404, path
                assert f'<html lang="{lang}"' in response.text
                assert NOT_FOUND[lang] in response.text
                assert 'name="robots" content="noindex"' in response.text


async def test_old_archive_links_redirect_and_a_test_sends_view_stays_unlisted(
    site: PublicSite,
) -> None:
    sends = site.sends
    async with site.client() as client:
        home = await client.get("/archive/be")
        feed = await client.get("/archive/en/feed.atom")
        first = await client.get(f"/archive/ru/{sends['51']}")
        again = await client.get(f"/archive/ru/{sends['51-again']}")
        test = await client.get(f"/archive/en/{sends['52-test']}")
        short = await client.get("/ru")
    assert (home.status_code, home.headers["location"]) == (301, f"{site.base}/be/")
    assert (feed.status_code, feed.headers["location"]) == (301, f"{site.base}/en/feed.atom")
    for view in (first, again):
        assert (view.status_code, view.headers["location"]) == (301, f"{site.base}/ru/issues/51")
    assert (short.status_code, short.headers["location"]) == (301, f"{site.base}/ru/")
    assert test.status_code == 200
    assert 'name="robots" content="noindex"' in test.text
    assert 'rel="canonical"' not in test.text


async def test_mails_link_the_public_origin_never_the_renderers_port(
    site: PublicSite, sqlite_url: str
) -> None:
    engine = create_engine(sqlite_url)
    try:
        async with session_factory(engine)() as session:
            rows = list((await session.exec(select(Edition))).all())
    finally:
        await engine.dispose()
    assert rows
    for row in rows:
        assert f":{site.renderer_port}" not in row.html + row.text
        assert f"{site.base}/archive/{row.language}/{row.send_id}" in row.html, "view in browser"
        assert f'href="{site.base}/{row.language}/"' in row.html, "the archive link"


async def test_a_renderer_that_does_not_answer_gives_a_502_not_a_hang(
    vhost_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    from services.subscription.app import create_app
    from tests.support.ports import free_port
    from tests.support.socket_app import on_socket

    port = free_port()
    settings = load_settings(
        mode="test",
        amqp_url=vhost_url,
        database_url=sqlite_url,
        var_dir=tmp_path,
        public_url=f"http://127.0.0.1:{port}",
        secret_key="public-site-secret-" + "s" * 32,
        renderer_probe_port=free_port(),  # nothing listens there
    )
    async with (
        on_socket(create_app(settings), port=port) as base,
        httpx.AsyncClient(base_url=base, timeout=15) as client,
    ):
        archive = await client.get("/en/")
        signup = await client.get("/?lang=en")
    assert archive.status_code == 502
    assert signup.status_code == 200, "the signup pages do not depend on the renderer"
