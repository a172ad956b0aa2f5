"""Date ranges are written as readers of each language write them (CLDR month names)."""

from __future__ import annotations

from datetime import date

import pytest

from services.renderer.dates import format_date_range


@pytest.mark.parametrize(
    ("language", "start", "end", "expected"),
    [
        ("en", date(2021, 12, 13), date(2021, 12, 19), "December 13–19, 2021"),
        ("be", date(2021, 12, 13), date(2021, 12, 19), "13–19 снежня 2021"),
        ("ru", date(2021, 12, 13), date(2021, 12, 19), "13–19 декабря 2021"),
        ("en", date(2021, 11, 29), date(2021, 12, 5), "November 29 – December 5, 2021"),
        ("ru", date(2021, 11, 29), date(2021, 12, 5), "29 ноября – 5 декабря 2021"),
        ("be", date(2021, 12, 27), date(2022, 1, 2), "27 снежня 2021 – 2 студзеня 2022"),
        ("en", date(2021, 12, 27), date(2022, 1, 2), "December 27, 2021 – January 2, 2022"),
        ("ru", date(2021, 12, 13), date(2021, 12, 13), "13 декабря 2021"),
    ],
)
def test_date_ranges_are_localized(language: str, start: date, end: date, expected: str) -> None:
    assert format_date_range(start, end, language=language) == expected
