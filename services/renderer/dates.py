"""Localized date ranges from CLDR data ("December 13–19, 2021", "13–19 снежня 2021").

CLDR's interval skeletons abbreviate months in Belarusian and Russian ("13–19 сне 2021"), so
the range is assembled from full, genitive month names (the CLDR "format" context) instead.
"""

from __future__ import annotations

from datetime import date

from babel.dates import format_date

_EN_DASH = "\u2013"


def format_date_range(start: date, end: date, *, language: str) -> str:
    """The issue's week as a reader of ``language`` writes it."""
    if language == "en":
        return _english(start, end)
    if start == end:
        return format_date(start, "d MMMM y", locale=language)
    if (start.year, start.month) == (end.year, end.month):
        return f"{start.day}{_EN_DASH}{format_date(end, 'd MMMM y', locale=language)}"
    if start.year == end.year:
        first = format_date(start, "d MMMM", locale=language)
        return f"{first} {_EN_DASH} {format_date(end, 'd MMMM y', locale=language)}"
    first = format_date(start, "d MMMM y", locale=language)
    return f"{first} {_EN_DASH} {format_date(end, 'd MMMM y', locale=language)}"


def _english(start: date, end: date) -> str:
    if start == end:
        return format_date(start, "MMMM d, y", locale="en")
    if (start.year, start.month) == (end.year, end.month):
        return f"{format_date(start, 'MMMM d', locale='en')}{_EN_DASH}{end.day}, {end.year}"
    if start.year == end.year:
        first = format_date(start, "MMMM d", locale="en")
        return f"{first} {_EN_DASH} {format_date(end, 'MMMM d, y', locale='en')}"
    first = format_date(start, "MMMM d, y", locale="en")
    return f"{first} {_EN_DASH} {format_date(end, 'MMMM d, y', locale='en')}"
