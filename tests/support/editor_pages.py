"""What the browser tests of the renderer's editor pages share: the sign-in, the page's heading,
and the check that a page at 390 px never scrolls sideways. Their screenshots go to
``tests/artifacts/editor/``."""

from __future__ import annotations

from playwright.async_api import Page

GROUP = "editor"
TOKEN = "test-admin-token"  # the admin token of the ``settings`` fixture (tests/conftest.py)


async def sign_in(page: Page, base: str) -> None:
    """Sign in on the editor's login page ``page`` shows, and land on the issue list."""
    await page.fill("#token", TOKEN)
    await page.locator("form button[type=submit]").click()
    await page.wait_for_url(f"{base}/editor")


async def heading(page: Page) -> str:
    return (await page.locator("h1").first.inner_text()).strip()


async def no_sideways_scroll(page: Page, where: str) -> list[str]:
    """Narrow ``page`` to 390 px; a finding if it then scrolls sideways."""
    await page.set_viewport_size({"width": 390, "height": 800})
    wide = await page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    return [f"{where} @390px scrolls sideways by {wide}px"] if wide > 0 else []
