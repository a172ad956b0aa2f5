"""The ops page's templates: escaped, translated, formatted; rendered through the service's
own page environments with a Summary built by hand (no server)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from functools import cache

import pytest
from jinja2 import Environment

from services.subscription.i18n import page_environments
from services.subscription.languages import LANGUAGE_NAMES
from services.subscription.ops.dead_letters import DeadLetter
from services.subscription.ops.queue_snapshots import QueueSnapshot, QueueStat
from services.subscription.ops.read_models import DeliveryError, Reputation
from services.subscription.ops.state import Summary
from services.subscription.ops.views import PROGRESS_COLUMNS
from shared.messaging.topology import DEAD_LETTER_QUEUE
from shared.send_progress import LanguageProgress, Reason, SendProgress

HOSTILE = '<script>alert("x")</script>'
NOW = datetime(2026, 12, 2, 1, 2, 3, tzinfo=UTC)


def summary() -> Summary:
    send = SendProgress(
        send_id="send-1",
        issue_key="2026-48",
        status="running",
        created_at=NOW,
        finished_at=None,
        languages=[
            LanguageProgress(
                language="en", counts={"sent": 3, "queued": 1, "complained": 2}, sent_in_window=3
            ),
            LanguageProgress(language="be", counts={"queued": 5}),
        ],
        reasons=[Reason("deferred", f"451 {HOSTILE}", 4, (("example.net", 4),))],
    )
    error = DeliveryError(
        delivery_id=7,
        send_id="send-1",
        kind="issue",
        language="en",
        domain="example.net",
        status="bounced",
        attempts=1,
        smtp_code=550,
        smtp_reply=HOSTILE,
        updated_at=NOW,
    )
    queues = QueueSnapshot(
        source="amqp",
        queues=(
            QueueStat(name="dispatcher.deliveries", ready=12, consumers=0),
            QueueStat(name=DEAD_LETTER_QUEUE, ready=1, consumers=0),
            QueueStat(name="renderer.issues", exists=False),
        ),
        taken_at=time.monotonic(),
    )
    letter = DeadLetter(HOSTILE, "m-1", "deliver.issue", "rejected", "dispatcher.deliveries", 2, "")
    return Summary(
        sends=[send],
        errors=[error],
        reputation=[Reputation(24, 100, {"hard": 3}, [("example.net", 3)])],
        queues=queues,
        queue_error="",
        dead_letters=[letter],
        generated_at=NOW,
    )


@cache
def environments() -> dict[str, Environment]:
    return page_environments()


def render(lang: str, template: str = "ops/page.html") -> str:
    return (
        environments()[lang]
        .get_template(template)
        .render(
            lang=lang,
            switch_links=[],
            language_names=LANGUAGE_NAMES,
            publication_name="Digest",
            summary=summary(),
            progress_columns=PROGRESS_COLUMNS,
            dead_letter_queue=DEAD_LETTER_QUEUE,
            refresh_s=5,
        )
    )


@pytest.mark.parametrize("lang", ["en", "be", "ru"])
def test_what_the_broker_and_smtp_servers_say_is_escaped(lang: str) -> None:
    html = render(lang)
    assert HOSTILE not in html, "an SMTP reply or a message type reached the page as markup"
    assert "&lt;script&gt;" in html
    assert html.count('<script src="/admin/ops.js" defer></script>') == 1
    assert "<script>" not in html


@pytest.mark.parametrize(
    ("lang", "words"),
    [
        ("en", ["Newsletter operations", "Queues", "Top deferral reasons", "missing"]),
        ("be", ["Аперацыі рассылкі", "Чэргі", "Галоўныя прычыны адкладання", "адсутнічае"]),
        ("ru", ["Операции рассылки", "Очереди", "Главные причины отсрочки", "отсутствует"]),
    ],
)
def test_the_page_speaks_its_language(lang: str, words: list[str]) -> None:
    html = render(lang)
    assert f'<html lang="{lang}">' in html
    missing = [w for w in words if w not in html]
    assert not missing, f"{lang}: {missing} not on the page"


def test_figures_are_formatted_and_other_states_summed() -> None:
    html = render("en", "ops/sections.html")
    row = html.split('data-language="en"', 1)[1].split("</tr>", 1)[0]
    assert '<td class="n">2</td><td class="n total">6</td>' in row, "complained counts as other"
    assert "0.6/min" in row, "3 sent in five minutes"
    assert '<td class="n eta">2 min</td>' in row, "1 left at 0.6 a minute: 100 s"
    be_row = html.split('data-language="be"', 1)[1].split("</tr>", 1)[0]
    assert "stalled" in be_row
    assert 'data-queue="dispatcher.deliveries" class="bad"' in html, "work waits, no consumer"
    assert 'data-queue="renderer.issues"><td>renderer.issues</td><td class="n bad"' in html
    assert "3.00&nbsp;%" in html, "3 hard bounces of 100 sent"
    assert '<strong class="bad" id="dead-letter-count">1</strong>' in html
