"""The metadata header of an issue file: ``key: value`` lines between two ``---`` lines."""

from __future__ import annotations

import calendar
import re
from datetime import date
from pathlib import Path

from services.renderer.errors import Problem

LANGUAGES: tuple[str, ...] = ("en", "be", "ru")
REQUIRED_KEYS: tuple[str, ...] = ("issue", "language", "dates", "subject", "preheader")
_DATES = re.compile(r"^(?P<start>\S+)\s*\.\.\s*(?P<end>\S+)$")
_ISO_DAY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_WEEK_DAYS = 7
_EXAMPLE = "2021-12-13 .. 2021-12-19"

# key -> (line, value, column of the value); all 1-based
Header = dict[str, tuple[int, str, int]]
_MAX_SUBJECT = 150


def parse_header(
    lines: list[str], *, file: str, problems: list[Problem]
) -> tuple[Header, int | None]:
    if not lines or lines[0].strip() != "---":
        problems.append(
            Problem(
                file,
                1,
                "the file must start with a '---' metadata header",
                hint="begin with '---', the 'key: value' lines, then '---'",
            )
        )
        return {}, None
    header: Header = {}
    for index, raw in enumerate(lines[1:], start=2):
        if raw.strip() == "---":
            return header, index
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        key, sep, value = raw.partition(":")
        key = key.strip().lower()
        if not sep or not key:
            problems.append(
                Problem(
                    file,
                    index,
                    f"header line {raw!r} is not 'key: value'",
                    hint="write e.g. 'issue: 51'",
                )
            )
            continue
        if key not in REQUIRED_KEYS:
            problems.append(
                Problem(
                    file, index, f"unknown header key {key!r} (known: {', '.join(REQUIRED_KEYS)})"
                )
            )
            continue
        if key in header:
            problems.append(
                Problem(file, index, f"header key {key!r} appears twice", hint="keep one of them")
            )
            continue
        column = len(raw) - len(value.lstrip()) + 1 if value.strip() else len(raw) + 1
        header[key] = (index, value.strip(), column)
    problems.append(
        Problem(
            file,
            len(lines),
            "the metadata header is not closed by a '---' line",
            hint="add a '---' line after the last 'key: value' line",
        )
    )
    return header, None


def parse_day(raw: str) -> tuple[date | None, str]:
    """``2021-12-13`` as a date, or None and why it is not one (a real calendar day)."""
    match = _ISO_DAY.match(raw)
    if match is None:
        return None, f"{raw!r} is not a date written YYYY-MM-DD"
    year, month, day = (int(part) for part in match.groups())
    if not 1 <= month <= 12:
        return None, f"{raw} is not a date: there is no month {month}"
    days = calendar.monthrange(year, month)[1]
    if not 1 <= day <= days:
        name = calendar.month_name[month]
        return None, f"{raw} is not a date: {name} {year} has {days} days"
    return date(year, month, day), ""


def parse_dates(
    raw: str, *, file: str, line: int, column: int, problems: list[Problem]
) -> tuple[date, date] | None:
    """The issue's week; an error for what is not a date range, a warning for one that is not
    one week long."""
    match = _DATES.match(raw)
    if match is None:
        problems.append(
            Problem(
                file,
                line,
                f"dates must be a range like {_EXAMPLE}, not {raw!r}",
                column=column,
                hint="write the first and last day of the week, joined by '..'",
                check="dates",
            )
        )
        return None
    days: list[date] = []
    for part in ("start", "end"):
        day, why = parse_day(match[part])
        if day is None:
            problems.append(
                Problem(
                    file,
                    line,
                    why,
                    column=column + match.start(part),
                    hint=f"write a real calendar day, e.g. {_EXAMPLE}",
                    check="dates",
                )
            )
        else:
            days.append(day)
    if len(days) != 2:
        return None
    start, end = days
    if end < start:
        problems.append(
            Problem(
                file,
                line,
                f"the date range ends ({end}) before it starts ({start})",
                column=column + match.start("end"),
                hint="write the first day first",
                check="dates",
            )
        )
        return None
    length = (end - start).days + 1
    if length != _WEEK_DAYS:
        problems.append(
            Problem(
                file,
                line,
                f"the range {start} .. {end} is {length} day{'s' if length > 1 else ''} long, "
                "not one week",
                column=column,
                hint="a weekly issue covers seven days, e.g. " + _EXAMPLE,
                level="warning",
                check="dates",
            )
        )
    return start, end


def header_values(  # noqa: PLR0912 - one branch per header key reads best
    header: Header, *, file: str, problems: list[Problem]
) -> dict[str, object]:
    values: dict[str, object] = {
        "language": "",
        "number": 0,
        "date_from": date.min,
        "date_to": date.min,
        "subject": "",
        "preheader": "",
    }
    for key in REQUIRED_KEYS:
        if key not in header or not header[key][1]:
            line = header[key][0] if key in header else 1
            problems.append(
                Problem(
                    file,
                    line,
                    f"the header has no {key!r}",
                    hint=f"add a line '{key}: …' between the two '---' lines",
                )
            )
    if "issue" in header and header["issue"][1]:
        line, raw, column = header["issue"]
        if raw.isdigit() and int(raw) > 0:
            values["number"] = int(raw)
        else:
            problems.append(
                Problem(
                    file,
                    line,
                    f"issue must be a positive number, not {raw!r}",
                    column=column,
                    hint="write e.g. 'issue: 51'",
                )
            )
    if "language" in header and header["language"][1]:
        line, raw, column = header["language"]
        expected = Path(file).stem
        if raw not in LANGUAGES:
            problems.append(
                Problem(
                    file,
                    line,
                    f"language {raw!r} is not one of {LANGUAGES}",
                    column=column,
                    hint=f"write 'language: {expected}'",
                )
            )
        elif expected in LANGUAGES and raw != expected:
            problems.append(
                Problem(
                    file,
                    line,
                    f"language {raw!r} does not match the file name",
                    column=column,
                    hint=f"write 'language: {expected}' or rename the file",
                )
            )
        values["language"] = raw
    if "dates" in header and header["dates"][1]:
        line, raw, column = header["dates"]
        found = parse_dates(raw, file=file, line=line, column=column, problems=problems)
        if found is not None:
            values["date_from"], values["date_to"] = found
    for key in ("subject", "preheader"):
        if key in header:
            line, raw, column = header[key]
            if len(raw) > _MAX_SUBJECT:
                problems.append(
                    Problem(
                        file,
                        line,
                        f"{key} is {len(raw)} characters (at most {_MAX_SUBJECT})",
                        column=column,
                        hint="shorten it",
                    )
                )
            values[key] = raw
    return values
