"""The reader's time zone and cadence through the real subscription app, database and broker:
the signup form's zone (select list, pre-selected by a script its CSP allows by hash), the
preference page's zone and cadence, and the consent ledger's record of each cadence change."""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import col, select

from shared.db.tables import ConsentRecord, Subscriber
from shared.db.tables.timestamps import utcnow
from tests.integration.subscription_support import (
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


async def _reader(database_url: str, email: str) -> tuple[Subscriber, list[ConsentRecord]]:
    async with session_on(database_url) as session:
        subscriber = (await session.exec(select(Subscriber).where(Subscriber.email == email))).one()
        consents = (
            await session.exec(
                select(ConsentRecord)
                .where(ConsentRecord.subscriber_id == subscriber.id)
                .order_by(col(ConsentRecord.id))
            )
        ).all()
        return subscriber, list(consents)


async def test_the_signup_form_offers_a_zone_that_works_without_script_and_one_the_csp_allows(
    private_amqp_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    settings = settings_for(private_amqp_url, sqlite_url, tmp_path)
    async with running_app(settings) as (_, client):
        page = await client.get("/?lang=be")
    assert '<select id="time-zone" name="time_zone">' in page.text
    assert '<option value="Europe/Minsk">Europe/Minsk</option>' in page.text
    assert "Часавы пояс" in page.text
    [script] = re.findall(r"<script>(.*?)</script>", page.text, flags=re.S)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in page.headers["content-security-policy"]
    assert "default-src 'none'" in page.headers["content-security-policy"]


async def test_zone_from_signup_then_zone_and_cadence_from_the_preference_page(
    private_amqp_url: str, database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(private_amqp_url, database_url, tmp_path)
    email = unique_address("cadence")
    async with command_tap(private_amqp_url) as tap, running_app(settings) as (_, client):
        await sign_up(client, email, lang="ru", extra={"time_zone": "Asia/Tokyo"})
        subscriber, _ = await _reader(database_url, email)
        assert subscriber.time_zone == "Asia/Tokyo"
        assert subscriber.cadence == "every"
        [command] = await tap.wait_for(email, "confirmation")
        await follow_form(client, command.links["confirm_url"], "/confirm")
        preferences = command.links["preferences_url"]

        page = await client.get(preferences)
        assert 'value="every" checked' in page.text
        assert '<option value="Asia/Tokyo" selected>' in page.text
        assert "Один выпуск в месяц (первый в каждом месяце)" in page.text

        saved = await follow_form(
            client,
            preferences,
            "/preferences",
            {"action": "save", "cadence": "monthly", "time_zone": "Europe/Warsaw"},
        )
        assert saved.status_code == 200
        assert 'value="monthly" checked' in saved.text
        subscriber, consents = await _reader(database_url, email)
        assert (subscriber.cadence, subscriber.time_zone) == ("monthly", "Europe/Warsaw")
        assert [c.source for c in consents if c.form == "cadence"] == ["preferences page: monthly"]

        # Saving the same cadence again records nothing new; a pause lasts four weeks.
        await follow_form(client, preferences, "/preferences", {"action": "save"})
        before = utcnow()
        await follow_form(
            client, preferences, "/preferences", {"action": "save", "cadence": "paused"}
        )
        subscriber, consents = await _reader(database_url, email)
        changes = [c for c in consents if c.form == "cadence"]
        assert len(changes) == 2, [c.source for c in changes]
        assert subscriber.cadence == "paused"
        assert subscriber.paused_until is not None
        assert before + timedelta(weeks=4) <= subscriber.paused_until
        assert subscriber.paused_until <= utcnow() + timedelta(weeks=4)
        assert changes[1].source.startswith("preferences page: paused until ")

        # An unknown zone is not stored: the reader falls back to the edition's default.
        await follow_form(
            client, preferences, "/preferences", {"action": "save", "time_zone": "Mars/Base"}
        )
        subscriber, _ = await _reader(database_url, email)
        assert subscriber.time_zone is None
