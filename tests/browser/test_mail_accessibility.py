"""Every mail a reader gets, as Chromium shows it: axe-core finds no serious or critical problem.

The renderer's pure functions build the confirmation, welcome and goodbye mails and the sample
issue (deploy/sample-issue, filled for one reader) in each language, premailer included, as
they are sent (offline: the issue's remote image shows its alt text). Chromium shows each HTML
body at 390 px in light and dark mode and at 1280 px; screenshots are kept in
tests/artifacts/mails/.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Browser

from services.renderer.catalogs import Templates
from services.renderer.fill import FillPlan, recipient_values
from services.renderer.issue import IssueFolder, parse_sources
from services.renderer.render import EditionContext, render_edition, render_transactional
from tests.browser.axe_checks import check_and_shoot

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
SITE = "https://news.example.org"
LANGUAGES = ("en", "be", "ru")
LINKS = {
    "confirm_url": f"{SITE}/confirm?token=sample",
    "preferences_url": f"{SITE}/preferences?token=sample",
    "unsubscribe_url": f"{SITE}/unsubscribe?token=sample",
}


def _mails(language: str) -> dict[str, str]:
    templates = Templates()
    mails = {
        kind: render_transactional(templates, kind=kind, language=language, links=LINKS).html
        for kind in ("confirmation", "welcome", "goodbye")
    }
    edition = parse_sources(IssueFolder.read(ROOT / "deploy" / "sample-issue").sources)[language]
    issue = render_edition(
        templates,
        edition,
        context=EditionContext(
            segment=language, view_url=f"{SITE}/{language}/issues/50", archive_url=f"{SITE}/"
        ),
    ).html
    # Filled for one reader, as the dispatcher sends it.
    mails["issue"] = FillPlan(issue, escape_html=True).fill(
        recipient_values(
            unsubscribe_url=LINKS["unsubscribe_url"],
            preferences_url=LINKS["preferences_url"],
            recipient="reader@example.org",
        )
    )
    return mails


@pytest.mark.parametrize("language", LANGUAGES)
async def test_every_mail_has_no_serious_accessibility_problem(
    browser: Browser, language: str
) -> None:
    context = await browser.new_context(java_script_enabled=True, offline=True)
    try:
        page = await context.new_page()
        found: list[str] = []
        for kind, html in _mails(language).items():
            await page.set_content(html, wait_until="load")
            assert await page.locator("html").get_attribute("lang") == language
            found += await check_and_shoot(page, group="mails", name=f"{kind}-{language}")
    finally:
        await context.close()
    assert not found, "axe-core found serious/critical problems:\n" + "\n".join(found)
