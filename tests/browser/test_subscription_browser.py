"""The signup journey in real headless Chromium (Debian's ``chromium``), in each language.

The subscription app runs with its real lifespan on a real socket (uvicorn); the real renderer
and dispatcher run beside it (their ``service.run``), all on one database and a private
RabbitMQ vhost, delivering to the aiosmtpd sink (``subscription_stack.py``). The browser fills
the form, the test reads the confirmation mail from the sink's Maildir, and the browser follows
its links to confirm and then unsubscribe. A screenshot of each language's form is kept in
``tests/artifacts/``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Browser, Page
from sqlmodel import select

from newsletter_cli.smtp_sink import SmtpSink
from services.subscription.policy import SignupPolicy
from shared.db.tables import Subscriber
from tests.browser.subscription_stack import subscription_stack
from tests.integration.subscription_support import private_amqp_url, unique_address
from tests.support.chromium import ARTIFACTS
from tests.support.database import session_on

pytestmark = pytest.mark.browser
__all__ = ["private_amqp_url"]

TEXTS = {
    "en": {
        "label": "Email address",
        "done": "Check your inbox",
        "confirm": "Confirm my subscription",
        "confirmed": "Your subscription is confirmed",
        "unsubscribe": "Unsubscribe",
        "unsubscribed": "You are unsubscribed",
    },
    "be": {
        "label": "Адрас электроннай пошты",
        "done": "Праверце пошту",
        "confirm": "Пацвердзіць падпіску",
        "confirmed": "Падпіска пацверджана",
        "unsubscribe": "Адпісацца",
        "unsubscribed": "Вы адпісаліся",
    },
    "ru": {
        "label": "Адрес электронной почты",
        "done": "Проверьте почту",
        "confirm": "Подтвердить подписку",
        "confirmed": "Подписка подтверждена",
        "unsubscribe": "Отписаться",
        "unsubscribed": "Вы отписались",
    },
}


async def _status(database_url: str, email: str) -> str | None:
    async with session_on(database_url) as session:
        found = await session.exec(select(Subscriber.status).where(Subscriber.email == email))
        return found.first()


async def _heading(page: Page) -> str:
    return (await page.locator("h1").inner_text()).strip()


async def test_sign_up_confirm_and_unsubscribe_in_chromium_in_each_language(
    private_amqp_url: str, sqlite_url: str, smtp_sink: SmtpSink, tmp_path: Path, browser: Browser
) -> None:
    policy = SignupPolicy(signup_min_seconds=0.5, response_floor_s=0.0, ip_limit=100)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with subscription_stack(
        amqp_url=private_amqp_url,
        database_url=sqlite_url,
        smtp_sink=smtp_sink,
        tmp_path=tmp_path,
        secret_key="browser-test-secret-" + "b" * 32,
        policy=policy,
    ) as stack:
        for lang, text in TEXTS.items():
            email = unique_address(f"browser-{lang}")
            context = await browser.new_context(java_script_enabled=False)
            page = await context.new_page()
            await page.goto(f"{stack.base}/?lang={lang}")
            assert await page.locator("html").get_attribute("lang") == lang
            await page.screenshot(
                path=str(ARTIFACTS / f"subscription-form-{lang}.png"), full_page=True
            )
            # Labelled and keyboard-usable: find the field by its label, type, Enter.
            field = page.get_by_label(text["label"])
            await field.fill(email)
            assert await page.locator(f"#language-{lang}").is_checked()
            # The time trap wants a person's pause. Only a lower bound: the form's stamp was
            # signed before this wait began, so a slow machine only makes the pause longer.
            await page.wait_for_timeout(600)
            await field.press("Enter")
            await page.wait_for_load_state()
            assert await _heading(page) == text["done"]

            confirmation = await stack.mail_for(email, "/confirm?token=")
            assert confirmation.language == lang
            await page.goto(confirmation.links("/confirm?token=")[0])
            assert await _status(sqlite_url, email) == "pending"
            await page.get_by_role("button", name=text["confirm"]).click()
            await page.wait_for_load_state()
            assert await _heading(page) == text["confirmed"]
            assert await _status(sqlite_url, email) == "active"

            welcome = await stack.mail_for(email, "/unsubscribe?token=")
            await page.goto(welcome.links("/unsubscribe?token=")[0])
            await page.get_by_role("button", name=text["unsubscribe"]).click()
            await page.wait_for_load_state()
            assert await _heading(page) == text["unsubscribed"]
            assert await _status(sqlite_url, email) == "unsubscribed"
            await context.close()
    for lang in TEXTS:
        assert (ARTIFACTS / f"subscription-form-{lang}.png").stat().st_size > 1000
