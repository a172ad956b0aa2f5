"""The signup journey in real headless Chromium (Debian's ``chromium``), in each language.

The subscription app runs with its real lifespan on a real socket (uvicorn); the real renderer
and dispatcher run beside it (their ``service.run``), all on one database and a private
RabbitMQ vhost, delivering to the aiosmtpd sink. The browser fills the form, the test reads the
confirmation mail from the sink's Maildir, and the browser follows its links to confirm and
then unsubscribe. A screenshot of each language's form is kept in ``tests/artifacts/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright
from sqlmodel import select

from newsletter_cli.mailbox_reader import StoredMail, read_maildir
from newsletter_cli.smtp_sink import SmtpSink
from services.dispatcher import service as dispatcher_service
from services.renderer import service as renderer_service
from services.subscription.app import create_app
from services.subscription.policy import SignupPolicy
from shared.db.engine import create_engine, session_factory
from shared.db.tables import Subscriber
from shared.probes import ProbeServer
from shared.settings import Settings, load_settings
from tests.integration.subscription_support import private_amqp_url, unique_address
from tests.support.chromium import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from tests.support.ports import free_port as _free_port

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
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            found = await session.exec(select(Subscriber.status).where(Subscriber.email == email))
            return found.first()
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def _renderer_and_dispatcher(settings: Settings) -> AsyncIterator[None]:
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(renderer_service.run(settings, stop=stop)),
        asyncio.create_task(dispatcher_service.run(settings, stop=stop)),
    ]
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def _mail_for(maildir: Path, email: str, containing: str, timeout: float = 60) -> StoredMail:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for mail in read_maildir(maildir):
            if email in mail.recipient and mail.links(containing):
                return mail
        await asyncio.sleep(0.2)
    raise AssertionError(f"no mail to {email} with a {containing} link within {timeout}s")


async def _heading(page: Page) -> str:
    return (await page.locator("h1").inner_text()).strip()


async def test_sign_up_confirm_and_unsubscribe_in_chromium_in_each_language(
    private_amqp_url: str, sqlite_url: str, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    settings = load_settings(
        mode="test",
        amqp_url=private_amqp_url,
        database_url=sqlite_url,
        var_dir=tmp_path,
        public_url=base,
        secret_key="browser-test-secret-" + "b" * 32,
        admin_token="browser-admin",
        smtp_url=smtp_sink.url,
        renderer_probe_port=_free_port(),
        dispatcher_probe_port=_free_port(),
    )
    maildir = tmp_path / "mail"
    policy = SignupPolicy(signup_min_seconds=0.5, response_floor_s=0.0, ip_limit=100)
    server = ProbeServer(create_app(settings, policy=policy), host="127.0.0.1", port=port)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await server.start()
    try:
        async with _renderer_and_dispatcher(settings), async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
            )
            try:
                for lang, text in TEXTS.items():
                    email = unique_address(f"browser-{lang}")
                    context = await browser.new_context(java_script_enabled=False)
                    page = await context.new_page()
                    await page.goto(f"{base}/?lang={lang}")
                    assert await page.locator("html").get_attribute("lang") == lang
                    await page.screenshot(
                        path=str(ARTIFACTS / f"subscription-form-{lang}.png"), full_page=True
                    )
                    # Labelled and keyboard-usable: find the field by its label, type, Enter.
                    field = page.get_by_label(text["label"])
                    await field.fill(email)
                    assert await page.locator(f"#language-{lang}").is_checked()
                    await page.wait_for_timeout(600)  # the time trap wants a person's pause
                    await field.press("Enter")
                    await page.wait_for_load_state()
                    assert await _heading(page) == text["done"]

                    confirmation = await _mail_for(maildir, email, "/confirm?token=")
                    assert confirmation.language == lang
                    await page.goto(confirmation.links("/confirm?token=")[0])
                    assert await _status(sqlite_url, email) == "pending"
                    await page.get_by_role("button", name=text["confirm"]).click()
                    await page.wait_for_load_state()
                    assert await _heading(page) == text["confirmed"]
                    assert await _status(sqlite_url, email) == "active"

                    welcome = await _mail_for(maildir, email, "/unsubscribe?token=")
                    await page.goto(welcome.links("/unsubscribe?token=")[0])
                    await page.get_by_role("button", name=text["unsubscribe"]).click()
                    await page.wait_for_load_state()
                    assert await _heading(page) == text["unsubscribed"]
                    assert await _status(sqlite_url, email) == "unsubscribed"
                    await context.close()
            finally:
                await browser.close()
    finally:
        await server.stop()
    for lang in TEXTS:
        assert (ARTIFACTS / f"subscription-form-{lang}.png").stat().st_size > 1000
