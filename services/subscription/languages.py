"""Languages of subscribers and pages (the page-language rule is in :mod:`shared.languages`)."""

from __future__ import annotations

from shared.languages import (
    DEFAULT_LANGUAGE,
    LANGUAGE_NAMES,
    choose_language,
    parse_accept_language,
)
from shared.messaging.schemas import Language
from shared.settings import LANGUAGES


def clean_languages(chosen: list[str]) -> list[str]:
    """The supported editions among ``chosen``, de-duplicated, in the suite's order."""
    wanted = {value.strip().lower() for value in chosen}
    return [language for language in LANGUAGES if language in wanted]


def as_language(value: str) -> Language:
    """A stored language code as the message schemas' ``Language`` (unknown -> default)."""
    if value == "be":
        return "be"
    if value == "ru":
        return "ru"
    return "en"


__all__ = [
    "DEFAULT_LANGUAGE",
    "LANGUAGE_NAMES",
    "as_language",
    "choose_language",
    "clean_languages",
    "parse_accept_language",
]
