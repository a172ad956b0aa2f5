"""Every subscription page, as a reader sees it in Chromium: readable, whole at 320-1280 px.

The real subscription app (its lifespan, on a socket), renderer and dispatcher run on one SQLite
database and a private RabbitMQ vhost, delivering to the aiosmtpd sink
(``subscription_stack.py``, as for ``test_subscription_browser.py``). Per language the browser
walks every page a reader can meet: the form (with the pitch), the form with an error, "check
your inbox", confirm and confirmed, an expired and an invalid link, preferences and saved,
unsubscribe and unsubscribed. On each, axe-core (WCAG 2 A/AA, contrast included) runs in light
and dark mode at 390 and 1280 px and screenshots go to ``tests/artifacts/subscription-pages/``.
(The form's narrow-screen geometry is ``test_signup_form_layout.py``.)
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from itsdangerous.timed import TimestampSigner
from playwright.async_api import Browser, Page
from sqlmodel import select

from newsletter_cli.smtp_sink import SmtpSink
from shared.db.tables import Subscriber
from shared.links import payload
from shared.settings import DEFAULT_PITCH
from shared.tokens import Purpose, TokenSigner
from tests.browser.axe_checks import check_and_shoot
from tests.browser.subscription_stack import subscription_stack
from tests.integration.subscription_support import private_amqp_url, unique_address
from tests.support.database import session_on

pytestmark = pytest.mark.browser
__all__ = ["private_amqp_url"]

SECRET = "browser-pages-secret-" + "p" * 32
GROUP = "subscription-pages"
EIGHT_DAYS_S = 8 * 24 * 3600
HEADINGS = {
    "en": {"form": "Subscribe to our newsletter", "saved": "Your preferences"},
    "be": {"form": "Падпішыцеся на нашу рассылку", "saved": "Вашы налады"},
    "ru": {"form": "Подпишитесь на нашу рассылку", "saved": "Ваши настройки"},
}
BUTTONS = {
    "en": ("Subscribe", "Confirm my subscription", "Save", "Unsubscribe"),
    "be": ("Падпісацца", "Пацвердзіць падпіску", "Захаваць", "Адпісацца"),
    "ru": ("Подписаться", "Подтвердить подписку", "Сохранить", "Отписаться"),
}


def _confirm_token_signed_eight_days_ago(subscriber: Subscriber) -> str:
    """A real confirmation token, dated back (itsdangerous reads the clock in ``get_timestamp``)."""
    assert subscriber.id is not None
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TimestampSigner, "get_timestamp", lambda _: int(time.time()) - EIGHT_DAYS_S)
        return TokenSigner(SECRET).sign(
            Purpose.CONFIRM, payload(subscriber.id, subscriber.email_hash)
        )


async def _subscriber(database_url: str, email: str) -> Subscriber:
    async with session_on(database_url) as session:
        found = await session.exec(select(Subscriber).where(Subscriber.email == email))
        return found.one()


async def test_every_subscription_page_is_readable_and_holds_together(
    private_amqp_url: str,
    sqlite_url: str,
    smtp_sink: SmtpSink,
    tmp_path: Path,
    browser: Browser,
) -> None:
    found: list[str] = []
    async with subscription_stack(
        amqp_url=private_amqp_url,
        database_url=sqlite_url,
        smtp_sink=smtp_sink,
        tmp_path=tmp_path,
        secret_key=SECRET,
    ) as stack:
        base = stack.base
        for lang in ("en", "be", "ru"):
            subscribe, confirm, save, unsubscribe = BUTTONS[lang]
            context = await browser.new_context(bypass_csp=True)
            page = await context.new_page()

            async def shoot(name: str, lang: str = lang, page: Page = page) -> None:
                found.extend(await check_and_shoot(page, group=GROUP, name=f"{name}-{lang}"))

            await page.goto(f"{base}/?lang={lang}")
            assert (await page.locator("h1").inner_text()).strip() == HEADINGS[lang]["form"]
            assert DEFAULT_PITCH[lang] in await page.locator("main").inner_text()
            await shoot("signup")

            await page.locator("#email").fill("not-an-address")
            await page.get_by_role("button", name=subscribe).click()
            await page.wait_for_load_state()
            assert await page.locator("[role=alert]").count() == 1
            await shoot("signup-error")

            email = unique_address(f"pages-{lang}")
            await page.locator("#email").fill(email)
            await page.get_by_role("button", name=subscribe).click()
            await page.wait_for_load_state()
            await shoot("signup-done")

            confirmation = await stack.mail_for(email, "/confirm?token=")
            await page.goto(confirmation.links("/confirm?token=")[0])
            await shoot("confirm")
            await page.get_by_role("button", name=confirm).click()
            await page.wait_for_load_state()
            await shoot("confirmed")

            old = _confirm_token_signed_eight_days_ago(await _subscriber(sqlite_url, email))
            await page.goto(f"{base}/confirm?token={old}&lang={lang}")
            await shoot("link-expired")
            await page.goto(f"{base}/confirm?token=not-a-token&lang={lang}")
            await shoot("link-invalid")

            welcome = await stack.mail_for(email, "/preferences?token=")
            await page.goto(welcome.links("/preferences?token=")[0])
            await shoot("preferences")
            other = "be" if lang != "be" else "ru"
            await page.locator(f"label[for=language-{other}]").click()
            await page.get_by_role("button", name=save, exact=True).click()
            await page.wait_for_load_state()
            assert await page.locator("[role=status]").count() == 1
            await shoot("preferences-saved")

            await page.goto(welcome.links("/unsubscribe?token=")[0])
            await shoot("unsubscribe")
            await page.get_by_role("button", name=unsubscribe, exact=True).click()
            await page.wait_for_load_state()
            await shoot("unsubscribed")
            await context.close()
    assert not found, "problems a reader would meet:\n" + "\n".join(found)
