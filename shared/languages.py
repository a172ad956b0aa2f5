"""Which language a page speaks: an explicit choice, else ``Accept-Language``, else English.

One rule for every service's pages (the subscription pages, the renderer's editor pages).
"""

from __future__ import annotations

from shared.settings import LANGUAGES

DEFAULT_LANGUAGE = "en"
# Endonyms: a language is always offered in its own name, whatever the page language.
LANGUAGE_NAMES: dict[str, str] = {"en": "English", "be": "Беларуская", "ru": "Русский"}
_MAX_HEADER = 1024


def parse_accept_language(header: str) -> list[tuple[str, float]]:
    """``"be-BY,ru;q=0.8"`` -> ``[("be", 1.0), ("ru", 0.8)]``, best first, primary subtags."""
    ranges: list[tuple[str, float, int]] = []
    for position, item in enumerate(header[:_MAX_HEADER].split(",")):
        tag, _, params = item.strip().partition(";")
        primary = tag.strip().split("-")[0].lower()
        if not primary:
            continue
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if 0.0 < quality <= 1.0:
            ranges.append((primary, quality, position))
    ranges.sort(key=lambda item: (-item[1], item[2]))
    return [(tag, quality) for tag, quality, _ in ranges]


def choose_language(explicit: str | None, accept_language: str | None) -> str:
    """The page language: a supported explicit choice wins, then the best accepted one."""
    if explicit and explicit.lower() in LANGUAGES:
        return explicit.lower()
    for tag, _ in parse_accept_language(accept_language or ""):
        if tag in LANGUAGES:
            return tag
    return DEFAULT_LANGUAGE
