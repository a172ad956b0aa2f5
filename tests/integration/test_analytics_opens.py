"""The open pixel end to end (issue 18): with ``NEWSLETTER_OPEN_TRACKING=true`` an issue sent
by the dispatcher to a real SMTP server carries one pixel per edition in its HTML part; loads
through the public origin are counted per edition and verdict (a mail program, Gmail's proxy,
an Apple preload, a HEAD and a scanner apart); a forged token counts nothing; the archive's
web page has no pixel. With the setting off (the default) no mail has a pixel and the route
does not exist. No column of ``mail_open`` names a reader."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.renderer.analytics_report import issue_report
from tests.support import dispatch_seed
from tests.support.analytics_stack import (
    analytics_stack,
    database_sessions,  # noqa: F401 - the sessions fixture
)
from tests.support.database import column_names

pytestmark = pytest.mark.integration

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Thunderbird/115.0"
GMAIL = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"


async def test_with_the_setting_on_each_edition_s_pixel_is_counted_by_verdict(
    vhost_url: str,
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    number = random.randint(20_000, 60_000)
    mine = await dispatch_seed.add_subscribers(sessions, 1, prefix=f"opener{number}")
    async with analytics_stack(vhost_url, database_url, tmp_path, open_tracking=True) as stack:
        by_rcpt = await stack.send_issue(sessions, number=number)
        base, client = stack.base, stack.client
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
    async with analytics_stack(vhost_url, database_url, tmp_path, open_tracking=False) as stack:
        by_rcpt = await stack.send_issue(sessions, number=number)
        answer = await stack.client.get("/en/o/AAAAAAAAAAAAAAAA.gif")
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
    names = (await column_names(database_url, "mail_open"))["mail_open"]
    assert names == ["issue_number", "edition", "day", "verdict", "count"], names
