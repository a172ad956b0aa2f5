"""The subscriber's journey through the real app, database (SQLite and PostgreSQL) and RabbitMQ:
sign up, confirm by the mailed link, change preferences, unsubscribe, sign up again."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import select

from services.subscription.link_tokens import LinkTokenReader
from shared.db.tables import ConsentRecord, Subscriber, SubscriberLanguage
from shared.tokens import Purpose
from tests.integration.subscription_support import (
    PUBLIC_URL,
    command_tap,
    follow_form,
    private_amqp_url,
    running_app,
    settings_for,
    sign_up,
    unique_address,
)
from tests.support.database import session_on

pytestmark = pytest.mark.integration
__all__ = ["private_amqp_url"]


async def _subscriber(
    database_url: str, email: str
) -> tuple[Subscriber, list[str], list[ConsentRecord]]:
    async with session_on(database_url) as session:
        subscriber = (await session.exec(select(Subscriber).where(Subscriber.email == email))).one()
        languages = sorted(
            (
                await session.exec(
                    select(SubscriberLanguage.language).where(
                        SubscriberLanguage.subscriber_id == subscriber.id
                    )
                )
            ).all()
        )
        consents = list(
            (
                await session.exec(
                    select(ConsentRecord)
                    .where(ConsentRecord.subscriber_id == subscriber.id)
                    .order_by(ConsentRecord.id)  # type: ignore[arg-type]
                )
            ).all()
        )
        return subscriber, languages, consents


async def test_signup_confirm_preferences_unsubscribe_and_resubscribe(
    private_amqp_url: str, database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(private_amqp_url, database_url, tmp_path)
    email = unique_address("journey")
    async with command_tap(private_amqp_url) as tap, running_app(settings) as (_, client):
        answer = await sign_up(client, email, lang="be", languages=("be", "ru"))
        assert answer.status_code == 200
        assert '<html lang="be">' in answer.text
        subscriber, languages, consents = await _subscriber(database_url, email)
        assert subscriber.status == "pending"
        assert languages == ["be", "ru"]
        assert subscriber.locale == "be"
        assert consents[0].form == "signup"
        assert consents[0].consent_language == "be"
        assert consents[0].shown_at is not None
        assert consents[0].confirmed_at is None

        [command] = await tap.wait_for(email, "confirmation")
        assert command.language == "be"
        assert set(command.links) == {
            "confirm_url",
            "unsubscribe_url",
            "preferences_url",
            "one_click_url",
        }
        confirm_url = command.links["confirm_url"]
        assert confirm_url.startswith(PUBLIC_URL + "/confirm?token=")

        # A GET (what a mail scanner does) changes nothing.
        page = await client.get(confirm_url)
        assert page.status_code == 200
        assert (await _subscriber(database_url, email))[0].status == "pending"

        answer = await follow_form(client, confirm_url, "/confirm")
        assert answer.status_code == 200, answer.text
        assert "Падпіска пацверджана" in answer.text  # the form's lang (be) is kept
        subscriber, _, consents = await _subscriber(database_url, email)
        assert subscriber.status == "active"
        assert subscriber.confirmed_at is not None
        assert consents[0].confirmed_at is not None
        await tap.wait_for(email, "welcome")

        # Confirming twice shows success again and sends no second welcome.
        again = await follow_form(client, confirm_url, "/confirm")
        assert again.status_code == 200
        assert "Падпіска пацверджана" in again.text
        await tap.settle()
        assert len(tap.for_address(email, "welcome")) == 1

        # Preferences: change editions without a new opt-in.
        preferences_url = command.links["preferences_url"]
        answer = await follow_form(client, preferences_url, "/preferences", {"action": "save"})
        assert answer.status_code == 200
        page = await client.get(preferences_url)
        from newsletter_cli.forms import find_forms

        form = next(f for f in find_forms(page.text, base_url=PUBLIC_URL) if f.method == "post")
        pairs = [(k, v) for k, v in form.filled({"action": "save"}) if k != "languages"]
        pairs.append(("languages", "en"))
        saved = await client.post(
            form.action, data={k: [v for kk, v in pairs if kk == k] for k, _ in pairs}
        )
        assert saved.status_code == 200
        subscriber, languages, _ = await _subscriber(database_url, email)
        assert languages == ["en"]
        assert subscriber.status == "active"

        # Unsubscribe through the page's POST button.
        answer = await follow_form(client, command.links["unsubscribe_url"], "/unsubscribe")
        assert answer.status_code == 200
        subscriber, _, consents = await _subscriber(database_url, email)
        assert subscriber.status == "unsubscribed"
        assert subscriber.unsubscribed_at is not None
        assert all(c.withdrawn_at is not None for c in consents)
        assert consents[0].withdrawal_method == "page"
        await tap.wait_for(email, "goodbye")

        # The old confirmation link cannot bring the address back (replay).
        replay = await follow_form(client, confirm_url, "/confirm")
        assert replay.status_code == 400
        assert (await _subscriber(database_url, email))[0].status == "unsubscribed"

        # Re-subscribing works through a new opt-in; the ledger keeps the old record.
        await sign_up(client, email, lang="en", languages=("en",))
        subscriber, languages, consents = await _subscriber(database_url, email)
        assert subscriber.status == "pending"
        assert len(consents) >= 2
        assert consents[0].withdrawn_at is not None
        # ...but within the hour no second confirmation mail goes out.
        await tap.settle()
        assert len(tap.for_address(email, "confirmation")) == 1


async def test_one_click_unsubscribe_needs_no_cookie_and_takes_effect_at_once(
    private_amqp_url: str, database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(private_amqp_url, database_url, tmp_path)
    email = unique_address("oneclick")
    async with command_tap(private_amqp_url) as tap, running_app(settings) as (app, client):
        await sign_up(client, email)
        [command] = await tap.wait_for(email, "confirmation")
        await follow_form(client, command.links["confirm_url"], "/confirm")
        client.cookies.clear()
        one_click = command.links["one_click_url"]
        answer = await client.post(
            one_click,
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert answer.status_code == 200, answer.text
        subscriber, _, consents = await _subscriber(database_url, email)
        assert subscriber.status == "unsubscribed"
        assert consents[-1].withdrawal_method == "one-click"
        # Idempotent, and no goodbye mail for a one-click unsubscribe.
        assert (
            await client.post(one_click, content=b"List-Unsubscribe=One-Click")
        ).status_code == 200
        await tap.settle()
        assert tap.for_address(email, "goodbye") == []
        # Not an RFC 8058 body: refused, nothing changes.
        assert (await client.post(one_click, content=b"hello")).status_code == 400
        # A confirmation token cannot be used as an unsubscribe token.
        token = command.links["confirm_url"].split("token=")[1]
        wrong = await client.post(
            f"/unsubscribe/one-click?token={token}", content=b"List-Unsubscribe=One-Click"
        )
        assert wrong.status_code == 400
        reader = LinkTokenReader(settings.secret_key.get_secret_value())
        link = reader.read(
            Purpose.UNSUBSCRIBE, one_click.split("token=")[1].replace("%3D", "="), max_age_s=None
        )
        assert link.subscriber_id == subscriber.id
        text = (await client.get("/metrics")).text
        assert 'newsletter_unsubscribes_total{language="en",method="one-click"} 1.0' in text
        assert 'newsletter_confirmations_total{language="en"} 1.0' in text
        assert app.state.registry is not None


async def test_page_language_follows_accept_language_and_preferences_can_unsubscribe(
    private_amqp_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    settings = settings_for(private_amqp_url, sqlite_url, tmp_path)
    email = unique_address("prefs")
    async with command_tap(private_amqp_url) as tap, running_app(settings) as (_, client):
        page = await client.get("/", headers={"Accept-Language": "de-DE, ru;q=0.8, en;q=0.5"})
        assert '<html lang="ru">' in page.text
        assert page.headers["content-language"] == "ru"
        assert 'name="languages" value="ru" checked' in page.text
        switched = await client.get("/?lang=be", headers={"Accept-Language": "ru"})
        assert '<html lang="be">' in switched.text

        await sign_up(client, email, lang="ru", languages=("ru", "en"))
        [command] = await tap.wait_for(email, "confirmation")
        # Pages behind mail links speak the subscriber's language without a switch.
        confirm_page = await client.get(command.links["confirm_url"])
        assert '<html lang="ru">' in confirm_page.text
        await follow_form(client, command.links["confirm_url"], "/confirm")
        answer = await follow_form(
            client, command.links["preferences_url"], "/preferences", {"action": "unsubscribe"}
        )
        assert answer.status_code == 200
        assert "Вы отписались" in answer.text
        subscriber, languages, consents = await _subscriber(sqlite_url, email)
        assert subscriber.status == "unsubscribed"
        assert languages == ["en", "ru"]
        assert consents[0].withdrawal_method == "preferences"
        await tap.wait_for(email, "goodbye")
        # The preferences page of an unsubscribed address offers a new signup, no form.
        page = await client.get(command.links["preferences_url"])
        assert "/preferences" not in page.text.split("<main>")[1]
