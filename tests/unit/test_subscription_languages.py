"""Choosing the page language: explicit switch, then Accept-Language, then English."""

from __future__ import annotations

import pytest

from services.subscription.languages import (
    as_language,
    choose_language,
    clean_languages,
    parse_accept_language,
)


def test_accept_language_is_ordered_by_quality_then_position() -> None:
    assert parse_accept_language("en;q=0.5, be-BY, ru;q=0.8,xx;q=0") == [
        ("be", 1.0),
        ("ru", 0.8),
        ("en", 0.5),
    ]


def test_garbage_accept_language_does_not_fail() -> None:
    parsed = parse_accept_language(";;,q=abc,\x00" + "x" * 5000 + ";q=2")
    assert all(len(tag) <= 1024 for tag, _ in parsed)
    assert choose_language(None, "ru;q=nonsense, *") == "en"


@pytest.mark.parametrize(
    ("explicit", "header", "expected"),
    [
        ("be", "ru", "be"),
        ("RU", None, "ru"),
        ("de", "ru-RU,ru;q=0.9", "ru"),
        (None, "de-DE, be;q=0.7, en;q=0.3", "be"),
        (None, "fr", "en"),
        (None, None, "en"),
    ],
)
def test_explicit_choice_wins_then_the_best_accepted_language(
    explicit: str | None, header: str | None, expected: str
) -> None:
    assert choose_language(explicit, header) == expected


def test_editions_are_filtered_deduplicated_and_ordered() -> None:
    assert clean_languages(["ru", "EN", "xx", "ru", " be "]) == ["en", "be", "ru"]
    assert clean_languages(["<script>", "en\r\n"]) == ["en"]
    assert as_language("be") == "be"
    assert as_language("zz") == "en"
