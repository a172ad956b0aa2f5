"""The renderer's own MIME view of a mail (previews, the preflight's defect check)."""

from __future__ import annotations

import email
from email import policy
from email.headerregistry import Address

import pytest

from services.renderer.mime import build_message, transfer_encoding

SENDER = Address("Дайджэст", "digest", "example.org")


def test_short_lines_go_as_8bit_and_long_ones_as_quoted_printable() -> None:
    assert transfer_encoding("Прывітанне\n" * 10) == "8bit"
    assert transfer_encoding("я" * 600 + "\n") == "quoted-printable"


def test_the_message_has_both_parts_its_language_and_an_unencoded_one_click_header() -> None:
    url = "https://news.example.org/unsubscribe/one-click?token=" + "t" * 120
    data = build_message(
        sender=SENDER,
        to="reader@example.org",
        subject="Выпуск 50",
        html="<p>Прывітанне</p>",
        text="Прывітанне\n",
        language="be",
        list_unsubscribe_url=url,
    )
    message = email.message_from_bytes(data, policy=policy.default)
    assert [d for part in message.walk() for d in part.defects] == []
    assert message["Content-Language"] == "be"
    assert message["Subject"] == "Выпуск 50"
    assert f"List-Unsubscribe: <{url}>\r\n".encode() in data
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert [p.get_content_type() for p in message.walk()] == [
        "multipart/alternative",
        "text/plain",
        "text/html",
    ]


def test_a_header_injection_through_the_unsubscribe_url_is_refused() -> None:
    with pytest.raises(ValueError, match="unsafe"):
        build_message(
            sender=SENDER,
            to="reader@example.org",
            subject="x",
            html="<p>x</p>",
            text="x\n",
            language="en",
            list_unsubscribe_url="https://x.example.org/\r\nBcc: victim@example.org",
        )
