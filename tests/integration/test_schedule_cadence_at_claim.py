"""A cadence changed after the planning is honoured at claim time, end to end: a local-hour send
is planned (its deliveries wait hours in the ledger), then readers pause, go monthly (having had
this month's issue) or unsubscribe on the real preference page; when the fake clock reaches
their hour, they get no mail, the ledger says why and ``newsletter send status`` shows it,
and everyone else gets theirs."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from typer.testing import CliRunner

from newsletter_cli.main import app as cli
from services.dispatcher import cadence, ledger
from shared.clock import FakeClock
from shared.db.tables.deliveries import Delivery, Send
from shared.db.tables.subscribers import Subscriber
from shared.links import Links
from shared.messaging.schemas import PlanSend, SendSchedule
from shared.messaging.topology import PLAN_SEND
from shared.tokens import TokenSigner
from tests.integration.subscription_support import (
    PUBLIC_URL,
    follow_form,
    running_app,
)
from tests.integration.subscription_support import (
    settings_for as subscription_settings,
)
from tests.support import dispatch_seed
from tests.support.own_database import OwnDatabase
from tests.support.schedule_clock import ClockedDispatcher, wait_until
from tests.support.test_mta import ScriptedMta

pytest_plugins = ("tests.support.dispatch_fixtures",)  # own_database
pytestmark = pytest.mark.integration

MINSK = ZoneInfo("Europe/Minsk")  # the be edition's default zone


async def subscribers(
    sessions: async_sessionmaker[AsyncSession], addresses: list[str]
) -> dict[str, Subscriber]:
    async with sessions() as session:
        found = await session.exec(
            select(Subscriber).where(col(Subscriber.email).in_(addresses)),
        )
        return {str(s.email): s for s in found}


async def test_readers_who_pause_go_monthly_or_leave_after_planning_get_nothing_and_say_why(
    vhost_url: str,
    own_database: OwnDatabase,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sessions, postgres_url = own_database.sessions, own_database.url
    addresses = await dispatch_seed.add_subscribers(sessions, 5, languages=("be",), prefix="claim")
    keeper, other_keeper, pauser, monthly, leaver = addresses
    # The preference page stores a pause of four weeks from the real clock: the fake one starts
    # at the real time, and the send's local hour is two hours later.
    start = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    due = start + timedelta(hours=2)
    claim_at = due + timedelta(minutes=1)
    readers = await subscribers(sessions, addresses)
    # The monthly reader had this month's issue from an earlier send.
    earlier = str(uuid.uuid4())
    had_it_at = max(cadence.month_start(claim_at), claim_at - timedelta(hours=3))
    async with sessions() as session:
        session.add(Send(id=earlier, issue_key="2026-earlier", languages="be", status="done"))
        await session.flush()
        reader = readers[monthly]
        session.add(
            Delivery(
                dedupe_key=f"send:{earlier}:{reader.id}:be",
                send_id=earlier,
                subscriber_id=reader.id,
                email=monthly,
                email_domain=reader.email_domain,
                language="be",
                status="sent",
                created_at=had_it_at,
                updated_at=had_it_at,
            )
        )
        await session.commit()

    clock = FakeClock(start)
    send_id = str(uuid.uuid4())
    await dispatch_seed.add_editions(sessions, send_id, ("be",))
    with ScriptedMta() as mta:
        settings = dispatch_seed.make_settings(
            amqp_url=vhost_url,
            database_url=postgres_url,
            smtp_url=mta.url,
            tmp_path=tmp_path,
            dispatch_outbox_sweep_s=0.1,
        )
        async with ClockedDispatcher(settings, clock=clock) as dispatcher:
            await dispatch_seed.publish(
                vhost_url,
                PlanSend(
                    send_id=send_id,
                    issue_key="2026-claim",
                    segments=["be"],
                    schedule=SendSchedule(local_time=due.astimezone(MINSK).strftime("%H:%M")),
                ),
                routing_key=PLAN_SEND,
            )

            async def planned() -> bool:
                rows = await dispatch_seed.deliveries(sessions, send_id)
                return len(rows) == 5 and all(
                    r.status == "pending" and r.due_at == due for r in rows
                )

            await wait_until(planned, "five deliveries waiting for the local hour")
            await dispatcher.passes_after(2)
            assert not mta.handler.copies(), "mailed before the local hour"

            # Readers change their minds on the real preference page.
            app_settings = subscription_settings(vhost_url, postgres_url, tmp_path / "app")
            links = Links(
                public_url=PUBLIC_URL,
                signer=TokenSigner(app_settings.secret_key.get_secret_value()),
            )

            def page(address: str) -> str:
                reader = readers[address]
                assert reader.id is not None
                return links.preferences(reader.id, reader.email_hash)

            async with running_app(app_settings) as (_, client):
                for address, form in (
                    (pauser, {"action": "save", "cadence": "paused"}),
                    (monthly, {"action": "save", "cadence": "monthly"}),
                    (leaver, {"action": "unsubscribe"}),
                ):
                    answer = await follow_form(client, page(address), "/preferences", form)
                    assert answer.status_code == 200, answer.text[:300]
            changed = await subscribers(sessions, addresses)
            assert changed[pauser].cadence == "paused"
            paused_until = changed[pauser].paused_until
            assert paused_until is not None
            assert paused_until > claim_at
            assert changed[monthly].cadence == "monthly"
            assert changed[leaver].status == "unsubscribed"

            clock.set(claim_at)
            send = await dispatch_seed.wait_for_send(sessions, send_id)
        copies = mta.handler.copies()
    assert dict(copies) == {keeper: 1, other_keeper: 1}
    assert send.total == 5
    rows = {r.email: r for r in await dispatch_seed.deliveries(sessions, send_id)}
    assert {a: (rows[a].status, rows[a].smtp_reply) for a in (pauser, monthly, leaver)} == {
        pauser: ("cancelled", cadence.PAUSED_REASON),
        monthly: ("cancelled", cadence.MONTHLY_REASON),
        leaver: ("unsubscribed", ledger.NOT_SUBSCRIBED),
    }
    assert {rows[a].status for a in (keeper, other_keeper)} == {"sent"}

    monkeypatch.setenv("NEWSLETTER_MODE", "test")
    monkeypatch.setenv("NEWSLETTER_DATABASE_URL", postgres_url)
    monkeypatch.setenv("NEWSLETTER_AMQP_URL", vhost_url)
    shown = await asyncio.to_thread(CliRunner().invoke, cli, ["send", "status", send_id])
    assert shown.exit_code == 0, shown.output
    assert "top not-sent reasons:" in shown.output, shown.output
    for reason in (cadence.PAUSED_REASON, cadence.MONTHLY_REASON, ledger.NOT_SUBSCRIBED):
        assert reason in shown.output, shown.output
