"""The editor pages in Chromium, in each language: sign in, the issue list, an issue's readiness
and previews, the send review, and the issue once sent (its earlier sends with their progress).
axe-core (WCAG 2 A/AA, contrast included) in light and dark mode at 390 and 1280 px, no
horizontal scrolling at 390 px, screenshots under ``tests/artifacts/editor/``."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Browser, Page

from shared.settings import Settings
from tests.browser.axe_checks import check_and_shoot
from tests.integration.renderer_harness import running_renderer
from tests.support.editor_pages import GROUP, heading, no_sideways_scroll, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.integration]

SIGN_IN = {"en": "Sign in to the editor", "be": "Уваход у рэдактар", "ru": "Вход в редактор"}
ISSUES = {"en": "Issues", "be": "Выпускі", "ru": "Выпуски"}
REVIEW = {
    "en": "Start the send of sample-issue?",
    "be": "Пачаць рассылку sample-issue?",
    "ru": "Начать рассылку sample-issue?",
}
EARLIER = {"en": "Earlier sends", "be": "Папярэднія рассылкі", "ru": "Предыдущие рассылки"}


async def look(page: Page, name: str) -> list[str]:
    return await no_sideways_scroll(page, name) + await check_and_shoot(
        page, group=GROUP, name=name
    )


async def test_the_editor_pages_are_readable_in_every_language(
    settings: Settings, tmp_path: Path, browser: Browser
) -> None:
    found: list[str] = []
    async with running_renderer(settings, tmp_path) as renderer:
        base = renderer.base_url
        pages: dict[str, Page] = {}
        for lang in ("en", "be", "ru"):
            context = await browser.new_context()
            page = pages[lang] = await context.new_page()
            await page.goto(f"{base}/editor?lang={lang}")
            assert await heading(page) == SIGN_IN[lang]
            assert await page.get_attribute("html", "lang") == lang
            found += await look(page, f"login-{lang}")
            await sign_in(page, base)
            assert await heading(page) == ISSUES[lang], "the language choice holds"
            found += await look(page, f"issues-{lang}")
            await page.locator(".issues a", has_text="sample-issue").click()
            await page.wait_for_url(f"{base}/editor/issue/sample-issue")
            assert await heading(page) == "sample-issue"
            found += await look(page, f"issue-{lang}")
            await page.locator("form[action$='/send'] button[type=submit]").click()
            await page.wait_for_load_state()
            assert await heading(page) == REVIEW[lang]
            found += await look(page, f"review-{lang}")
        # Send once (no dispatcher runs here: the send stays "requested"), then see the
        # issue as sent, with its earlier sends and the choice of who gets it again.
        page = pages["en"]
        await page.locator("form button[type=submit]").click()
        await page.wait_for_load_state()
        for lang, page in pages.items():
            await page.goto(f"{base}/editor/issue/sample-issue")
            assert await page.locator("#earlier-title").inner_text() == EARLIER[lang]
            assert await page.locator("#earlier-sends tbody tr").count() == 1
            found += await look(page, f"issue-sent-{lang}")
            await page.context.close()
    assert not found, "\n".join(found)
