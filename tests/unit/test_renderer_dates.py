"""Date ranges are written as readers of each language write them (CLDR month names); the
header's dates must be real calendar days, and a range that is not one week is a warning."""

from __future__ import annotations

from datetime import date

import pytest

from services.renderer.dates import format_date_range
from services.renderer.errors import Problem
from services.renderer.issue_header import parse_dates, parse_day


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


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2021-02-30", "2021-02-30 is not a date: February 2021 has 28 days"),
        ("2020-02-30", "2020-02-30 is not a date: February 2020 has 29 days"),
        ("2021-04-31", "2021-04-31 is not a date: April 2021 has 30 days"),
        ("2021-13-01", "2021-13-01 is not a date: there is no month 13"),
        ("2021-00-10", "2021-00-10 is not a date: there is no month 0"),
        ("13.12.2021", "'13.12.2021' is not a date written YYYY-MM-DD"),
    ],
)
def test_a_day_that_is_not_on_the_calendar_says_why(raw: str, expected: str) -> None:
    day, why = parse_day(raw)
    assert (day, str(why)) == (None, expected)


def test_a_real_day_parses() -> None:
    day, why = parse_day("2020-02-29")
    assert (day, str(why)) == (date(2020, 2, 29), "")


def test_the_header_names_the_impossible_day_with_its_column() -> None:
    problems: list[Problem] = []
    assert (
        parse_dates("2021-02-22 .. 2021-02-30", file="en.md", line=4, column=8, problems=problems)
        is None
    )
    assert [str(p) for p in problems] == [
        "en.md:4:22: 2021-02-30 is not a date: February 2021 has 28 days "
        "(write a real calendar day, e.g. 2021-12-13 .. 2021-12-19)"
    ]


@pytest.mark.parametrize(
    ("raw", "days"),
    [
        ("2021-12-13 .. 2022-03-13", 91),
        ("2021-12-13 .. 2021-12-13", 1),
        ("2021-12-13 .. 2021-12-20", 8),
    ],
)
def test_a_range_that_is_not_one_week_is_a_warning(raw: str, days: int) -> None:
    problems: list[Problem] = []
    found = parse_dates(raw, file="en.md", line=4, column=8, problems=problems)
    assert found is not None
    (problem,) = problems
    assert problem.level == "warning"
    assert f"is {days} day" in problem.message
    assert "not one week" in problem.message


def test_a_week_has_no_problem() -> None:
    problems: list[Problem] = []
    found = parse_dates(
        "2021-12-13 .. 2021-12-19", file="en.md", line=4, column=8, problems=problems
    )
    assert found == (date(2021, 12, 13), date(2021, 12, 19))
    assert problems == []
