"""The signup form on narrow screens: nothing scrolls sideways, no edition leaves its checkbox.

The form is rendered by the real :class:`~services.subscription.pages.Pages` (templates, catalogs,
publication) and shown in Chromium at 320 and 390 px, in light and dark mode. At 390 px the
"Русский" label used to wrap onto the next line, away from its box.
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Browser, Page
from starlette.requests import Request

from services.subscription.form_guard import CsrfGuard
from services.subscription.languages import LANGUAGE_NAMES
from services.subscription.pages import Pages
from shared.settings import DEFAULT_PITCH

pytestmark = pytest.mark.browser

WIDTHS = (320, 360, 390)
# The checkbox and every line box of its label's text, from the page's own layout.
CHOICE_GEOMETRY = """code => {
  const input = document.getElementById("language-" + code);
  const label = document.querySelector(`label[for="language-${code}"]`);
  const range = document.createRange();
  range.selectNodeContents(label);
  const rects = [...range.getClientRects()].filter(r => r.width > 0 && r.height > 0);
  const box = input.getBoundingClientRect();
  return {
    tops: rects.map(r => r.top),
    textTop: Math.min(...rects.map(r => r.top)),
    textBottom: Math.max(...rects.map(r => r.bottom)),
    inputMiddle: box.top + box.height / 2,
  };
}"""


def _form_html(lang: str) -> str:
    pages = Pages(csrf=CsrfGuard("layout-secret-" + "l" * 32), secure_cookies=False)
    request = Request(
        {
            "type": "http",
            "method": "GET",
            "scheme": "http",
            "server": ("127.0.0.1", 8000),
            "path": "/",
            "query_string": f"lang={lang}".encode(),
            "headers": [],
        }
    )
    response = pages.render(
        request,
        "signup.html",
        lang=lang,
        error=None,
        email="",
        chosen=[lang],
        form_stamp="stamp",
    )
    return bytes(response.body).decode()


async def _problems(page: Page, lang: str, width: int) -> list[str]:
    problems: list[str] = []
    scroll_width = await page.evaluate("document.documentElement.scrollWidth")
    if scroll_width > width:
        problems.append(f"{lang} @{width}px: the page is {scroll_width}px wide")
    for code in LANGUAGE_NAMES:
        geometry: dict[str, Any] = await page.evaluate(CHOICE_GEOMETRY, code)
        one_line = max(geometry["tops"]) - min(geometry["tops"]) < 8
        beside = geometry["textTop"] <= geometry["inputMiddle"] <= geometry["textBottom"]
        if not (one_line and beside):
            problems.append(f"{lang} @{width}px: {LANGUAGE_NAMES[code]} wraps away from its box")
    return problems


@pytest.mark.parametrize("lang", ["en", "be", "ru"])
async def test_each_edition_stays_beside_its_checkbox_on_narrow_screens(
    browser: Browser, lang: str
) -> None:
    html = _form_html(lang)
    assert DEFAULT_PITCH[lang] in html
    context = await browser.new_context(java_script_enabled=True, offline=True)
    try:
        page = await context.new_page()
        await page.set_content(html, wait_until="load")
        found: list[str] = []
        for scheme in ("light", "dark"):
            await page.emulate_media(color_scheme=scheme)
            for width in WIDTHS:
                await page.set_viewport_size({"width": width, "height": 800})
                found += await _problems(page, lang, width)
    finally:
        await context.close()
    assert not found, "\n".join(found)
