"""The canonical delivery line, built by joins, is the JSON the structlog line would be."""

from __future__ import annotations

import json
from typing import Any

import pytest
import structlog

from services.dispatcher.delivery_log import DeliveryLog
from shared.addresses import mask_email

FIELDS: list[dict[str, Any]] = [
    {
        "delivery_id": 12,
        "send_id": "5b0c4f2e-0000-4000-8000-000000000001",
        "language": "be",
        "smtp_code": 250,
        "reply": "",
        "attempt": 1,
        "tier": None,
    },
    {
        "delivery_id": 7,
        "smtp_code": None,
        "reply": 'Паштовая скрыня "перапоўнена"\\ \n\t\x01 try later',
        "attempt": 3,
        "tier": "15m",
        "flag": True,
        "ratio": 0.5,
        "nested": {"a": [1, "б"]},
    },
    {"service": "shadowed", "delivery_id": 1},  # a key of the context given again
]


def _expected(event: str, to: str, context: dict[str, Any], **fields: Any) -> Any:
    line = {"event": event, "level": "info", "logger": "services.dispatcher.worker"}
    line["timestamp"] = "T"
    line.update(context)
    line["to"] = mask_email(to)
    line.update(fields)
    return line


@pytest.mark.parametrize("fields", FIELDS)
def test_the_joined_line_is_the_json_of_the_whole_object(fields: dict[str, Any]) -> None:
    with structlog.contextvars.bound_contextvars(service="dispatcher", host="node-1"):
        log = DeliveryLog("services.dispatcher.worker")
        context = structlog.contextvars.get_contextvars()  # in its own order, as the log has it
    text = log.line("email_deferred", to="чытач@example.net", **fields)
    assert text.endswith("}\n")
    parsed = json.loads(text)
    assert parsed["timestamp"].endswith("Z")
    parsed["timestamp"] = "T"
    expected = _expected("email_deferred", "чытач@example.net", context, **fields)
    assert parsed == expected
    assert list(parsed) == list(expected), "keys in the order json.dumps of the dict has them"
    # Byte for byte the text json.dumps makes of that object (same timestamp).
    timestamp = json.loads(text)["timestamp"]
    again = {**expected, "timestamp": timestamp}
    assert text == json.dumps(again, ensure_ascii=False, default=str) + "\n"
