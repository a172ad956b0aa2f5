"""The archive in Chromium, as readers reach it on the public origin: per language the issue
list and an issue page, axe-core (WCAG 2 A/AA, contrast included) in light and dark mode at 390
and 1280 px, screenshots under ``tests/artifacts/archive/``."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Browser

from tests.browser.axe_checks import check_and_shoot
from tests.integration.public_site import running_public_site

pytestmark = pytest.mark.browser

GROUP = "archive"
HEADINGS = {
    "en": "Archive of the Weekly Digest",
    "be": "Архіў Штотыднёвага дайджэста",
    "ru": "Архив Еженедельного дайджеста",
}


async def test_the_archive_and_an_issue_page_are_readable_in_every_language(
    vhost_url: str, sqlite_url: str, tmp_path: Path, browser: Browser
) -> None:
    found: list[str] = []
    async with running_public_site(vhost_url, sqlite_url, tmp_path) as site:
        await site.send(50, "2021-12-13 .. 2021-12-19")
        await site.send(51, "2021-12-20 .. 2021-12-26")
        for lang in ("en", "be", "ru"):
            page = await browser.new_page()
            await page.goto(f"{site.base}/{lang}/")
            assert (await page.locator("h1").inner_text()).strip() == HEADINGS[lang]
            found += await check_and_shoot(page, group=GROUP, name=f"archive-{lang}")
            await page.locator(".issue-list h2 a").first.click()
            await page.wait_for_load_state()
            assert page.url == f"{site.base}/{lang}/issues/51"
            found += await check_and_shoot(page, group=GROUP, name=f"issue-{lang}")
            await page.close()
    assert not found, "\n".join(found)
