"""The renderer through the real RabbitMQ and database: commands in, messages and rows out;
broken commands end in the dead-letter queue with their reason logged."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from sqlmodel import select
from structlog.testing import capture_logs

from shared.db.engine import create_engine, session_factory
from shared.db.tables import Edition
from shared.messaging import placeholders
from shared.messaging.publisher import Publisher
from shared.messaging.schemas import (
    DeliverTransactional,
    PlanSend,
    RenderIssue,
    RenderTransactional,
    SubscriberErased,
    decode,
)
from shared.messaging.topology import (
    DEAD_LETTER_QUEUE,
    DISPATCHER_PLANNER,
    DISPATCHER_TRANSACTIONAL,
    EVENTS,
    RENDER_ISSUE,
    RENDER_TRANSACTIONAL,
    RENDERER_ISSUES,
    SUBSCRIBER_ERASED,
)
from shared.settings import Settings
from tests.integration.renderer_harness import (
    RunningRenderer,
    running_renderer,
    sample_sources,
    take,
)

pytestmark = pytest.mark.integration

LINKS = {
    "confirm_url": "http://127.0.0.1:8000/confirm?token=abc",
    "unsubscribe_url": "http://127.0.0.1:8000/unsubscribe?token=abc",
    "preferences_url": "http://127.0.0.1:8000/preferences?token=abc",
    "one_click_url": "http://127.0.0.1:8000/unsubscribe/one-click?token=abc",
}


async def editions_of(database_url: str, send_id: str) -> list[Edition]:
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            rows = await session.exec(select(Edition).where(Edition.send_id == send_id))
            return sorted(rows.all(), key=lambda e: e.language)
    finally:
        await engine.dispose()


async def publish(renderer: RunningRenderer, message: object, routing_key: str) -> None:
    publisher = await Publisher.open(renderer.connection)
    try:
        await publisher.publish(message, routing_key=routing_key)  # type: ignore[arg-type]
    finally:
        await publisher.close()


def render_issue(**overrides: object) -> RenderIssue:
    values: dict[str, object] = {
        "send_id": str(uuid.uuid4()),
        "issue_key": "issue-50",
        "sources": sample_sources("en", "be", "ru"),
        "segments": ["en", "be", "ru"],
    }
    values.update(overrides)
    return RenderIssue.model_validate(values)


async def test_a_confirmation_command_becomes_a_delivery_in_its_language(
    settings: Settings, tmp_path: Path
) -> None:
    command = RenderTransactional(
        kind="confirmation", language="be", subscriber_id=41, to="chytach@example.org", links=LINKS
    )
    async with running_renderer(settings, tmp_path) as renderer:
        await publish(renderer, command, RENDER_TRANSACTIONAL)
        found = await take(
            renderer.connection,
            DISPATCHER_TRANSACTIONAL.name,
            lambda m: m.message_id == command.message_id,
        )
    assert found, "no DeliverTransactional arrived"
    delivery = decode(DeliverTransactional, found[0].body)
    assert delivery.message_id == command.message_id, "same id: a redelivery is deduplicated"
    assert (delivery.kind, delivery.language, delivery.subscriber_id) == ("confirmation", "be", 41)
    assert delivery.subject == "Пацвердзіце падпіску на Штотыднёвы дайджэст"
    assert LINKS["confirm_url"] in delivery.text.splitlines()
    assert '<html lang="be"' in delivery.html
    assert delivery.list_unsubscribe_url == LINKS["one_click_url"]


async def test_an_issue_command_stores_one_edition_per_segment_and_asks_for_the_send(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"database_url": database_url})
    command = render_issue()
    async with running_renderer(settings, tmp_path) as renderer:
        await publish(renderer, command, RENDER_ISSUE)
        found = await take(
            renderer.connection,
            DISPATCHER_PLANNER.name,
            lambda m: json.loads(m.body).get("send_id") == command.send_id,
        )
        assert found, "no PlanSend arrived"
        plan = decode(PlanSend, found[0].body)
        assert (plan.send_id, plan.issue_key, plan.segments) == (
            command.send_id,
            "issue-50",
            ["en", "be", "ru"],
        )
        assert plan.fallbacks == {}
        assert plan.test_to is None
        rows = await editions_of(database_url, command.send_id)
        assert [(e.language, e.content_language) for e in rows] == [
            ("be", "be"),
            ("en", "en"),
            ("ru", "ru"),
        ]
        for row in rows:
            assert placeholders.UNSUBSCRIBE_URL in row.html
            assert placeholders.RECIPIENT in row.text
            assert f"/archive/{row.language}/{command.send_id}" in row.html
            assert not row.is_test
            assert row.render_ms > 0
        assert rows[0].subject == "Мінск спрабуе сысці з расійскага цягніка эскалацыі"


async def test_a_segment_without_its_edition_gets_the_declared_fallback(
    settings: Settings, tmp_path: Path
) -> None:
    command = render_issue(sources=sample_sources("en", "ru"), fallbacks={"be": "ru"})
    async with running_renderer(settings, tmp_path) as renderer:
        await publish(renderer, command, RENDER_ISSUE)
        found = await take(
            renderer.connection,
            DISPATCHER_PLANNER.name,
            lambda m: json.loads(m.body).get("send_id") == command.send_id,
        )
    assert found
    assert decode(PlanSend, found[0].body).fallbacks == {"be": "ru"}
    be = [
        e for e in await editions_of(settings.database_url, command.send_id) if e.language == "be"
    ]
    assert be
    assert be[0].content_language == "ru"
    assert "Гэты выпуск яшчэ не перакладзены" in " ".join(be[0].html.split())


async def test_a_redelivered_issue_command_stores_its_editions_once(
    settings: Settings, tmp_path: Path
) -> None:
    command = render_issue()
    async with running_renderer(settings, tmp_path) as renderer:
        await publish(renderer, command, RENDER_ISSUE)
        await publish(renderer, command, RENDER_ISSUE)
        found = await take(
            renderer.connection,
            DISPATCHER_PLANNER.name,
            lambda m: json.loads(m.body).get("send_id") == command.send_id,
            count=2,
        )
    assert [m.message_id for m in found] == [f"plan-{command.send_id}"] * 2
    assert len(await editions_of(settings.database_url, command.send_id)) == 3


async def test_a_test_send_is_marked_and_left_to_the_dispatcher_to_prefix(
    settings: Settings, tmp_path: Path
) -> None:
    command = render_issue(test_to="editor@example.org", segments=["ru"])
    async with running_renderer(settings, tmp_path) as renderer:
        await publish(renderer, command, RENDER_ISSUE)
        found = await take(
            renderer.connection,
            DISPATCHER_PLANNER.name,
            lambda m: json.loads(m.body).get("send_id") == command.send_id,
        )
    assert found
    assert decode(PlanSend, found[0].body).test_to == "editor@example.org"
    (row,) = await editions_of(settings.database_url, command.send_id)
    assert row.is_test
    assert not row.subject.startswith("[TEST]"), "the dispatcher adds the prefix once"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        (
            {"sources": {"en": "no header at all"}, "segments": ["en"]},
            "en.md:1:1: the file must start",
        ),
        (
            {"sources": sample_sources("en", "ru")},
            "segment be: no be.md (missing articles: minsk-escalation)",
        ),
        (
            {
                "sources": {
                    "en": sample_sources("en")["en"].replace(
                        "forum-for-security-cooperation)", "forum-for-security-cooperation"
                    )
                },
                "segments": ["en"],
            },
            "en.md:20:1: unclosed link",
        ),
    ],
    ids=["no-header", "missing-edition", "unclosed-link"],
)
async def test_an_invalid_issue_command_is_dead_lettered_with_its_reason_logged(
    settings: Settings, tmp_path: Path, overrides: dict[str, object], reason: str
) -> None:
    command = render_issue(**overrides)
    async with running_renderer(settings, tmp_path) as renderer:
        with capture_logs() as logs:
            await publish(renderer, command, RENDER_ISSUE)
            dead = await take(
                renderer.connection,
                DEAD_LETTER_QUEUE,
                lambda m: m.message_id == command.message_id,
            )
    assert dead, "the invalid command was not dead-lettered"
    assert dead[0].headers["x-death"][0]["queue"] == RENDERER_ISSUES.name  # type: ignore[index]
    rejected = [e for e in logs if e["event"] == "render_command_rejected"]
    assert rejected, logs
    assert reason in rejected[0]["reason"]
    assert await editions_of(settings.database_url, command.send_id) == []


async def test_a_poison_message_is_dead_lettered(settings: Settings, tmp_path: Path) -> None:
    import aio_pika

    message_id = uuid.uuid4().hex
    async with running_renderer(settings, tmp_path) as renderer:
        channel = await renderer.connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange("newsletter.commands")
        with capture_logs() as logs:
            await exchange.publish(
                aio_pika.Message(b"{not json", message_id=message_id),
                routing_key=RENDER_TRANSACTIONAL,
            )
            dead = await take(
                renderer.connection, DEAD_LETTER_QUEUE, lambda m: m.message_id == message_id
            )
        await channel.close()
    assert dead, "the poison message was not dead-lettered"
    assert any(e["event"] == "poison_message_rejected" for e in logs)


async def test_a_poison_erasure_event_is_dead_lettered_and_the_next_one_still_applied(
    settings: Settings, tmp_path: Path
) -> None:
    """``renderer.erasures``: a body that is not a ``SubscriberErased`` goes to the dead
    letters, logged; the consumer carries on with the valid event behind it."""
    import asyncio
    import time

    import aio_pika

    poison_id = uuid.uuid4().hex
    erased = SubscriberErased(subscriber_id=424242)
    async with running_renderer(settings, tmp_path) as renderer:
        channel = await renderer.connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(EVENTS)
        with capture_logs() as logs:
            await exchange.publish(
                aio_pika.Message(b'{"subscriber_id": "DROP TABLE"}', message_id=poison_id),
                routing_key=SUBSCRIBER_ERASED,
            )
            dead = await take(
                renderer.connection, DEAD_LETTER_QUEUE, lambda m: m.message_id == poison_id
            )
            await exchange.publish(
                aio_pika.Message(erased.model_dump_json().encode(), message_id=erased.message_id),
                routing_key=SUBSCRIBER_ERASED,
            )
            deadline = time.monotonic() + 20
            while not any(e["event"] == "reader_clicks_forgotten" for e in logs):
                assert time.monotonic() < deadline, "the valid erasure was not applied"
                await asyncio.sleep(0.02)
        await channel.close()
    assert dead, "the poison erasure event was not dead-lettered"
    assert [e for e in logs if e["event"] == "erasure_event_rejected"], logs
    forgotten = [e for e in logs if e["event"] == "reader_clicks_forgotten"]
    assert forgotten[0]["subscriber_id"] == 424242


async def test_a_transactional_command_with_a_relative_link_is_dead_lettered(
    settings: Settings, tmp_path: Path
) -> None:
    command = RenderTransactional(
        kind="confirmation",
        language="en",
        subscriber_id=5,
        to="reader@example.org",
        links={"confirm_url": "/confirm?token=abc"},
    )
    async with running_renderer(settings, tmp_path) as renderer:
        with capture_logs() as logs:
            await publish(renderer, command, RENDER_TRANSACTIONAL)
            dead = await take(
                renderer.connection, DEAD_LETTER_QUEUE, lambda m: m.message_id == command.message_id
            )
    assert dead, "the broken confirmation was not dead-lettered"
    rejected = [e for e in logs if e["event"] == "render_command_rejected"]
    assert rejected, logs
    assert "link '/confirm?…' is not absolute" in rejected[0]["reason"]
    assert "token=abc" not in str(logs), "tokens never reach the log"
