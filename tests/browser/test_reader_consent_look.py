"""The per-reader analytics consent box (issue 18) as a reader meets it in Chromium.

With ``NEWSLETTER_PER_READER_ANALYTICS=true`` the signup form, the confirmation page and the
preference page carry the box with its consent text, in en/be/ru. Per language the browser
signs up through the form with the box ticked, follows the real confirmation and welcome mails
(``subscription_stack.py``: the services on a socket, the aiosmtpd sink), and checks the box:
on the confirmation page unticked again with a line saying only this tick counts (anyone can
post the signup form), ticked there and so on the preference page; labelled in the page's
language, reachable by its label, and every page whole at 390 and 1280 px with axe-core
clean; screenshots go to ``tests/artifacts/reader-consent/``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Browser

from newsletter_cli.smtp_sink import SmtpSink
from tests.browser.axe_checks import check_and_shoot
from tests.browser.subscription_stack import subscription_stack
from tests.integration.subscription_support import private_amqp_url, unique_address

pytestmark = pytest.mark.browser
__all__ = ["private_amqp_url"]

SECRET = "browser-consent-secret-" + "c" * 32
GROUP = "reader-consent"
SUBSCRIBE = {"en": "Subscribe", "be": "Падпісацца", "ru": "Подписаться"}
CONFIRM = {
    "en": "Confirm my subscription",
    "be": "Пацвердзіць падпіску",
    "ru": "Подтвердить подписку",
}
# The confirmation page's line above the box when the signup form's box was ticked.
WAITING = {
    "en": "The box below was ticked on the signup form",
    "be": "Сцяжок ніжэй быў адзначаны ў форме падпіскі",
    "ru": "Флажок ниже был отмечен в форме подписки",
}
# A word of each language's consent text that the other two do not have.
CONSENT_WORD = {
    "en": "Count my clicks",
    "be": "Улічваць мае пераходы",
    "ru": "Учитывать мои переходы",
}


async def test_the_consent_box_is_unticked_labelled_and_whole_in_every_language(
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
        per_reader_analytics=True,
    ) as stack:
        for lang in ("en", "be", "ru"):
            context = await browser.new_context(bypass_csp=True)
            page = await context.new_page()
            await page.goto(f"{stack.base}/?lang={lang}")
            box = page.get_by_role("checkbox", name=CONSENT_WORD[lang], exact=False)
            assert await box.count() == 1, f"{lang}: one consent box on the form"
            assert not await box.is_checked(), f"{lang}: the box starts unticked"
            found += await check_and_shoot(page, group=GROUP, name=f"signup-{lang}")

            email = unique_address(f"consent-{lang}")
            await page.locator("#email").fill(email)
            await page.locator("label[for=reader-analytics]").click()
            assert await box.is_checked(), f"{lang}: the label ticks the box"
            await page.get_by_role("button", name=SUBSCRIBE[lang]).click()
            await page.wait_for_load_state()

            # The confirmation page asks again, unticked: anyone can post the signup form.
            confirmation = await stack.mail_for(email, "/confirm?token=")
            await page.goto(confirmation.links("/confirm?token=")[0])
            box = page.get_by_role("checkbox", name=CONSENT_WORD[lang], exact=False)
            assert await box.count() == 1, f"{lang}: one consent box on the confirmation page"
            assert not await box.is_checked(), f"{lang}: unticked until the owner ticks it"
            assert await page.get_by_text(WAITING[lang], exact=False).is_visible()
            found += await check_and_shoot(page, group=GROUP, name=f"confirm-{lang}")
            await page.locator("label[for=reader-analytics]").click()
            await page.get_by_role("button", name=CONFIRM[lang]).click()
            await page.wait_for_load_state()

            welcome = await stack.mail_for(email, "/preferences?token=")
            await page.goto(welcome.links("/preferences?token=")[0])
            box = page.get_by_role("checkbox", name=CONSENT_WORD[lang], exact=False)
            assert await box.count() == 1, f"{lang}: one consent box on the preference page"
            assert await box.is_checked(), f"{lang}: consent given at the opt-in"
            found += await check_and_shoot(page, group=GROUP, name=f"preferences-{lang}")
            await page.locator("label[for=reader-analytics]").click()
            assert not await box.is_checked(), f"{lang}: the label unticks the box"
            await context.close()
    assert not found, "\n".join(found)
