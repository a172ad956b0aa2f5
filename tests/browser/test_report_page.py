"""The editors' report page of an issue (issue 18) in Chromium, in each language: its texts
come from the renderer's catalogs, its tables become labelled cards at 390 px and the page
never scrolls sideways (the charts scroll inside their own region), the open pixel's section
says its figures are machine-inflated; axe-core (WCAG 2 A/AA) finds nothing serious or
critical in light and dark mode; screenshots under ``tests/artifacts/editor/``."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from playwright.async_api import Browser

from services.renderer.click_store import flush_counts, flush_open_counts
from shared.settings import Settings
from tests.browser.axe_checks import check_and_shoot
from tests.integration.renderer_harness import running_renderer
from tests.support.analytics_stack import save_articles
from tests.support.database import sessions_on
from tests.support.editor_pages import GROUP, heading, no_sideways_scroll, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.integration]

TITLE = {
    "en": "Issue 50: readers' clicks",
    "be": "Выпуск 50: пераходы чытачоў",
    "ru": "Выпуск 50: переходы читателей",
}
OPENS = {
    "en": "Opens (machine-inflated)",
    "be": "Адкрыцці (завышаныя праграмамі)",
    "ru": "Открытия (завышены программами)",
}
ARTICLES = (
    ("minsk-escalation", "Minsk raises the stakes on the border: what the new exercises signal"),
    ("economy", "Potash transit after the sanctions: three routes and their costs"),
)


async def seed(database_url: str) -> None:
    async with sessions_on(database_url) as sessions:
        await save_articles(sessions, issue=50, articles=ARTICLES)
        day = date(2021, 12, 20)
        await flush_counts(
            sessions,
            {
                (50, "en", 0, 0, day, "counted"): 42,
                (50, "be", 0, 0, day, "counted"): 117,
                (50, "ru", 0, 0, day, "counted"): 63,
                (50, "ru", 1, 0, day, "counted"): 12,
                (50, "en", 1, 0, day, "scanner"): 9,
                (50, "be", 1, 0, day, "burst"): 4,
                # Two earlier issues, for the issue-by-issue line.
                (48, "en", 0, 0, date(2021, 12, 6), "counted"): 30,
                (48, "be", 0, 0, date(2021, 12, 6), "counted"): 80,
                (48, "ru", 0, 0, date(2021, 12, 6), "counted"): 51,
                (49, "en", 0, 0, date(2021, 12, 13), "counted"): 38,
                (49, "be", 0, 0, date(2021, 12, 13), "counted"): 96,
                (49, "ru", 0, 0, date(2021, 12, 13), "counted"): 70,
            },
        )
        await flush_open_counts(
            sessions,
            {
                (50, "en", day, "loaded"): 130,
                (50, "be", day, "loaded"): 301,
                (50, "be", day, "gmail_proxy"): 44,
                (50, "ru", day, "apple_proxy"): 57,
                (50, "ru", day, "head"): 3,
            },
        )


async def test_the_report_page_reads_well_in_every_language_and_at_390_px(
    settings: Settings, sqlite_url: str, tmp_path: Path, browser: Browser
) -> None:
    await seed(sqlite_url)
    found: list[str] = []
    async with running_renderer(settings, tmp_path) as renderer:
        base = renderer.base_url
        for lang in ("en", "be", "ru"):
            context = await browser.new_context()
            page = await context.new_page()
            await page.goto(f"{base}/editor?lang={lang}")
            await sign_in(page, base)
            await page.goto(f"{base}/editor/report/50")
            assert await heading(page) == TITLE[lang], "the title is translated"
            assert await page.get_attribute("html", "lang") == lang
            assert await page.locator("#opens-title").inner_text() == OPENS[lang]
            assert await page.locator("svg[role=img]").count() == 2
            label = await page.locator("svg[role=img]").first.get_attribute("aria-label")
            assert (lang == "en") == (label == "Readers' clicks per article and edition")
            found += await no_sideways_scroll(page, f"report-{lang}")
            # At 390 px a row is a card whose cells carry their column's name.
            cell = page.locator("table.report tbody tr").first.locator("td").nth(1)
            before = await cell.evaluate("td => getComputedStyle(td, '::before').content")
            assert before.strip('"'), "a narrow cell shows its column's name"
            found += await check_and_shoot(page, group=GROUP, name=f"report-{lang}")
            await context.close()
    assert not found, "\n".join(found)
