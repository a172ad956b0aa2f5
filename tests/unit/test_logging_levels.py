"""``shared/logging.py``: events under the level are dropped before any processor runs, and the
redaction still masks addresses and hides tokens in what is written."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from shared import logging as suite_logging
from shared.logging import configure_logging


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = []
    logging.getLogger().setLevel(logging.WARNING)


def test_events_under_the_level_never_reach_the_processors(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    original = suite_logging._redact

    def spy(logger: object, method: str, event: dict[str, object]) -> dict[str, object]:
        seen.append(str(event["event"]))
        return original(logger, method, event)

    monkeypatch.setattr(suite_logging, "_redact", spy)
    configure_logging(service="test", level="WARNING", fmt="json")
    log = structlog.get_logger("test.levels")
    log.info("signup_stored", email="reader@example.org")
    log.warning("publisher_slow", email="reader@example.org")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["event"] for line in lines] == ["publisher_slow"]
    assert seen == ["publisher_slow"], "an info event was processed by a WARNING process"


def test_what_is_written_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(service="test", level="INFO", fmt="json")
    log = structlog.get_logger("test.levels")
    for _ in range(2):  # the second time from the per-name cache
        log.info("mail_requested", to="reader@example.org", one_click_url="https://x/t", n=1)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert len(lines) == 2
    for line in lines:
        assert line["to"] != "reader@example.org"
        assert line["to"].endswith("@example.org")
        assert line["one_click_url"] == "[redacted]"
        assert line["n"] == 1
