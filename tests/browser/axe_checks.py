"""axe-core in the page: WCAG 2 A/AA rules, colour contrast included, serious and critical only.

axe.min.js (axe-core 4.12, MPL-2.0, Deque Systems) comes from the ``axe-playwright-python``
package of the ``dev`` extra; only its script is used, injected with ``page.evaluate`` (not
bound by the page's CSP). Screenshots go to ``tests/artifacts/<group>/`` and are committed.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Any

from playwright.async_api import Page

from tests.support.chromium import ARTIFACTS

WCAG_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
BLOCKING = {"serious", "critical"}
WIDTHS = (390, 1280)


@cache
def axe_script() -> str:
    return (files("axe_playwright_python") / "axe.min.js").read_text(encoding="utf-8")


async def blocking_violations(page: Page) -> list[str]:
    """Each serious or critical violation as 'rule (impact): help; first targets'."""
    await page.evaluate(axe_script())
    results: dict[str, Any] = await page.evaluate(
        """tags => axe.run(document, {runOnly: {type: "tag", values: tags},
                                      resultTypes: ["violations"]})""",
        WCAG_TAGS,
    )
    return [
        f"{v['id']} ({v['impact']}): {v['help']}; at {[n['target'] for n in v['nodes']][:3]}"
        for v in results["violations"]
        if v["impact"] in BLOCKING
    ]


async def check_and_shoot(page: Page, *, group: str, name: str) -> list[str]:
    """Screenshots and axe at 390 px (light and dark) and at 1280 px (light).

    Returns the blocking violations and any sideways scrolling (a page wider than the
    viewport), each prefixed with where it was found.
    """
    folder = ARTIFACTS / group
    folder.mkdir(parents=True, exist_ok=True)
    found: list[str] = []
    # Dark mode changes colours, not layout: it is checked and shot at the narrow width only.
    for width, scheme in ((WIDTHS[0], "light"), (WIDTHS[0], "dark"), (WIDTHS[1], "light")):
        await page.set_viewport_size({"width": width, "height": 800})
        await page.emulate_media(color_scheme=scheme)
        suffix = "" if scheme == "light" else "-dark"
        await page.screenshot(path=str(folder / f"{name}-{width}{suffix}.png"), full_page=True)
        found += [f"{name} @{width}px {scheme}: {v}" for v in await blocking_violations(page)]
        wide = int(await page.evaluate("document.documentElement.scrollWidth"))
        if wide > width:
            found.append(f"{name} @{width}px {scheme}: the page scrolls sideways ({wide} px wide)")
    await page.emulate_media(color_scheme="light")
    return found
