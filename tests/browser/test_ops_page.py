"""The ops page in headless Chromium: sign in with the token, read the sends, watch it refresh;
in English, Belarusian and Russian, at 390 and 1280 px, with axe-core.

The real subscription app (``create_app``) is served by uvicorn on a free port; Chromium is
Debian's (``/usr/bin/chromium``), driven by Playwright. Screenshots of the sign-in form and the
page per language are kept in tests/artifacts/ops/.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect
from sqlalchemy import update
from sqlmodel import col

from shared.db.tables import Delivery, Send
from shared.messaging import topology
from shared.settings import Settings, load_settings
from tests.browser.axe_checks import check_and_shoot
from tests.integration.subscription_http import served_subscription
from tests.support import infra
from tests.support.chromium import ARTIFACTS
from tests.support.database import session_on

pytestmark = [pytest.mark.browser, pytest.mark.integration]

TOKEN = "browser-ops-admin-token"


@pytest.fixture(scope="module")
def browser_amqp_url() -> Iterator[str]:
    """A private vhost; the app's lifespan declares the topology in it."""
    name, url = infra.create_vhost()
    try:
        yield url
    finally:
        infra.delete_vhost(name)


@pytest.fixture
def ops_settings(browser_amqp_url: str, sqlite_url: str, tmp_path: Path) -> Settings:
    return load_settings(
        mode="test",
        amqp_url=browser_amqp_url,
        database_url=sqlite_url,
        var_dir=tmp_path,
        secret_key="browser-ops-secret-" + "s" * 32,
        admin_token=TOKEN,
    )


@pytest.fixture
async def base_url(ops_settings: Settings) -> AsyncIterator[str]:
    async with served_subscription(ops_settings) as base:
        yield base


@pytest.fixture
async def page(base_url: str, browser: Browser) -> AsyncIterator[Page]:
    """Depends on ``base_url`` first so that the SQLite migration (which runs an event loop of
    its own and leaves none set) happens before this fixture's loop is in use."""
    context = await browser.new_context(viewport={"width": 1280, "height": 1100})
    try:
        yield await context.new_page()
    finally:
        await context.close()


async def seed(settings: Settings) -> str:
    """A running send: en 3 sent of 4, be 1 failed, 1 sent."""
    send_id = str(uuid.uuid4())
    async with session_on(settings.database_url) as session:
        session.add(
            Send(id=send_id, issue_key="2026-48", languages="en,be", status="running", total=6)
        )
        await session.flush()
        rows = [("en", "sent")] * 3 + [("en", "queued"), ("be", "sent"), ("be", "failed")]
        for n, (language, status) in enumerate(rows):
            session.add(
                Delivery(
                    dedupe_key=f"send:{send_id}:{n}",
                    send_id=send_id,
                    subscriber_id=n,
                    email=f"reader{n}@example.net",
                    email_domain="example.net",
                    language=language,
                    status=status,
                    smtp_code=550 if status == "failed" else None,
                    smtp_reply="5.7.1 message refused by policy" if status == "failed" else "",
                    sent_at=datetime.now(UTC) if status == "sent" else None,
                )
            )
        await session.commit()
    return send_id


async def finish_english(settings: Settings, send_id: str) -> None:
    async with session_on(settings.database_url) as session:
        await session.execute(
            update(Delivery)
            .where(col(Delivery.send_id) == send_id, col(Delivery.status) == "queued")
            .values(status="sent", sent_at=datetime.now(UTC))
        )
        await session.commit()


async def test_operator_signs_in_and_watches_a_send_progress(
    ops_settings: Settings, base_url: str, page: Page
) -> None:
    send_id = await seed(ops_settings)

    await page.goto(f"{base_url}/admin")
    await expect(page.get_by_label("Admin token")).to_be_visible()
    await page.get_by_label("Admin token").fill("wrong-token")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("not right")

    await page.get_by_label("Admin token").fill(TOKEN)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Newsletter operations")).to_be_visible()
    cookies = {c["name"]: c for c in await page.context.cookies()}
    assert cookies["admin_token"]["httpOnly"] is True
    assert cookies["admin_token"]["sameSite"] == "Strict"
    assert await page.evaluate("document.cookie") == "", "the token is not readable by scripts"

    await page.goto(f"{base_url}/admin?refresh=1")
    table = f'h3[data-send-id="{send_id}"] + .table-scroll table'
    english = page.locator(f'{table} tr[data-language="en"]')
    await expect(english.locator(".pct")).to_have_text("75 %")
    await expect(english.locator(".total")).to_have_text("4")
    belarusian = page.locator(f'{table} tr[data-language="be"]')
    await expect(belarusian.locator(".pct")).to_have_text("100 %")
    await expect(page.locator("#errors")).to_contain_text("message refused by policy")
    await expect(
        page.locator(f'#queues tr[data-queue="{topology.DEAD_LETTER_QUEUE}"]')
    ).to_be_visible()
    await expect(page.locator("#reputation")).to_contain_text("24 h")

    await finish_english(ops_settings, send_id)
    # No reload: the page's own script fetches the sections again.
    await expect(english.locator(".pct")).to_have_text("100 %", timeout=15_000)
    await expect(page.locator("#refresh-status")).to_contain_text("updated")

    shot = ARTIFACTS / "ops" / "ops-refreshed-en-1280.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


# What each language calls the page and its form: the page speaks the operator's language.
WORDS = {
    "en": {"heading": "Newsletter operations", "token": "Admin token", "sign_in": "Sign in",
           "wrong": "not right", "sends": "Sends", "queues": "Queues"},
    "be": {"heading": "Аперацыі рассылкі", "token": "Токен адміністратара", "sign_in": "Увайсці",
           "wrong": "няправільны", "sends": "Рассылкі", "queues": "Чэргі"},
    "ru": {"heading": "Операции рассылки", "token": "Токен администратора", "sign_in": "Войти",
           "wrong": "неверен", "sends": "Рассылки", "queues": "Очереди"},
}  # fmt: skip


def assert_page_headers(headers: dict[str, str], what: str) -> None:
    """The public pages' headers, and a CSP that lets the page run only its own script."""
    csp = headers.get("content-security-policy", "")
    for directive in ("default-src 'none'", "script-src 'self'", "frame-ancestors 'none'"):
        assert directive in csp, f"{what}: CSP {csp!r} lacks {directive!r}"
    assert "unsafe-eval" not in csp, f"{what}: CSP allows eval"
    assert headers.get("x-frame-options") == "DENY", f"{what}: {headers}"
    assert headers.get("referrer-policy") == "no-referrer", f"{what}: {headers}"
    assert headers.get("x-content-type-options") == "nosniff", f"{what}: {headers}"
    assert headers.get("cache-control") == "no-store", f"{what}: {headers}"


async def assert_no_page_overflow(page: Page, what: str) -> None:
    """At 390 px the page itself never scrolls sideways; wide tables scroll in their box."""
    await page.set_viewport_size({"width": 390, "height": 800})
    widths = await page.evaluate(
        """() => ({page: document.documentElement.scrollWidth, view: window.innerWidth,
                   boxes: [...document.querySelectorAll('.table-scroll')].map(
                       b => ({inner: b.scrollWidth, outer: b.clientWidth,
                              right: b.getBoundingClientRect().right}))})"""
    )
    assert widths["page"] <= widths["view"], f"{what}: the page is wider than the screen {widths}"
    assert all(b["right"] <= widths["view"] for b in widths["boxes"]), f"{what}: {widths}"
    assert any(b["inner"] > b["outer"] for b in widths["boxes"]), (
        f"{what}: no table needed its own scroll box at 390 px; the check proves nothing {widths}"
    )


@pytest.mark.parametrize("lang", ["en", "be", "ru"])
async def test_the_ops_page_speaks_each_language_and_holds_at_390_and_1280_px(
    ops_settings: Settings, base_url: str, browser: Browser, lang: str
) -> None:
    """English by default, Belarusian from Accept-Language, Russian from the switcher."""
    await seed(ops_settings)
    words = WORDS[lang]
    locale = {"en": "en-GB", "be": "be-BY", "ru": "en-GB"}[lang]
    context = await browser.new_context(locale=locale, viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    problems: list[str] = []

    answer = await page.goto(f"{base_url}/admin")
    assert answer is not None
    assert answer.status == 401
    assert_page_headers(answer.headers, "sign-in form")
    if lang == "ru":
        await page.locator('nav.languages a[hreflang="ru"]').click()
        await page.wait_for_load_state()
    await expect(page.locator("html")).to_have_attribute("lang", lang)
    await expect(page.get_by_role("heading", name=words["heading"])).to_be_visible()
    await page.get_by_label(words["token"]).fill("wrong-token")
    await page.get_by_role("button", name=words["sign_in"]).click()
    await expect(page.get_by_role("alert")).to_contain_text(words["wrong"])
    await expect(page.locator("html")).to_have_attribute("lang", lang)
    problems += await check_and_shoot(page, group="ops", name=f"login-{lang}")

    await page.set_viewport_size({"width": 1280, "height": 900})
    await page.get_by_label(words["token"]).fill(TOKEN)
    await page.get_by_role("button", name=words["sign_in"]).click()
    await expect(page.get_by_role("heading", name=words["heading"])).to_be_visible()
    await expect(page.locator("html")).to_have_attribute("lang", lang)
    # A long refresh period: the sections must not be swapped while axe reads them.
    answer = await page.goto(f"{base_url}/admin?refresh=300&lang={lang}")
    assert answer is not None
    assert answer.status == 200
    assert_page_headers(answer.headers, "ops page")
    await expect(page.get_by_role("heading", name=words["sends"], exact=True)).to_be_visible()
    await expect(page.get_by_role("heading", name=words["queues"], exact=True)).to_be_visible()
    await expect(
        page.locator(f'#queues tr[data-queue="{topology.DEAD_LETTER_QUEUE}"]')
    ).to_be_visible()
    await assert_no_page_overflow(page, f"ops page ({lang})")
    problems += await check_and_shoot(page, group="ops", name=f"ops-{lang}")

    sections = await page.request.get(f"{base_url}/admin/sections?lang={lang}")
    assert sections.status == 200
    assert words["queues"] in await sections.text(), "the refreshed sections keep the language"
    await context.close()
    assert not problems, "problems an operator would meet:\n" + "\n".join(problems)
