"""GDPR erasure reaches the dispatcher: ``SubscriberErased`` blanks the address of every
delivery of that subscriber, and an open one is dropped instead of sent."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db.tables.deliveries import Delivery
from shared.db.tables.subscribers import Subscriber
from shared.messaging.schemas import SubscriberErased
from shared.messaging.topology import EVENTS, SUBSCRIBER_ERASED
from tests.support import dispatch_seed
from tests.support.test_mta import ScriptedMta

pytestmark = pytest.mark.integration


async def test_an_erased_subscribers_deliveries_lose_their_address(
    vhost_url: str, sqlite_url: str, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    addresses = await dispatch_seed.add_subscribers(sessions, 2, languages=("en",))
    erased, kept = addresses
    send_id = str(uuid.uuid4())
    await dispatch_seed.add_editions(sessions, send_id, ("en",))
    with ScriptedMta() as mta:
        settings = dispatch_seed.make_settings(
            amqp_url=vhost_url, database_url=sqlite_url, smtp_url=mta.url, tmp_path=tmp_path
        )
        async with dispatch_seed.RunningDispatcher(settings):
            await dispatch_seed.plan(vhost_url, send_id, ["en"])
            await dispatch_seed.wait_for_send(sessions, send_id)
            async with sessions() as session:
                subscriber = (
                    await session.exec(select(Subscriber).where(Subscriber.email == erased))
                ).one()
                assert subscriber.id is not None
                subscriber_id = subscriber.id
                # A confirmation still waiting to go out, for the same subscriber.
                session.add(
                    Delivery(
                        dedupe_key=f"tx:{uuid.uuid4()}",
                        kind="confirmation",
                        send_id=None,
                        subscriber_id=subscriber_id,
                        email=erased,
                        email_domain="example.org",
                        language="en",
                        status="queued",
                    )
                )
                await session.commit()
            await dispatch_seed.publish(
                vhost_url,
                SubscriberErased(subscriber_id=subscriber_id),
                routing_key=SUBSCRIBER_ERASED,
                exchange=EVENTS,
            )
            for _ in range(100):
                async with sessions() as session:
                    rows = (
                        await session.exec(
                            select(Delivery).where(Delivery.subscriber_id == subscriber_id)
                        )
                    ).all()
                if rows and all(row.email == "" for row in rows):
                    break
                await asyncio.sleep(0.1)
    by_status = {row.status: row for row in rows}
    assert set(by_status) == {"sent", "unsubscribed"}
    assert all(row.email == "" and row.email_domain == "" for row in rows)
    kept_row = await dispatch_seed.deliveries(sessions, send_id)
    assert [row.email for row in kept_row if row.subscriber_id != subscriber_id] == [kept]
