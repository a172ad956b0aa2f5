"""The metadata header of an issue file: ``key: value`` lines between two ``---`` lines."""

from __future__ import annotations

import calendar
import re
from datetime import date
from pathlib import Path

from services.renderer.errors import N_, Problem, Wording

LANGUAGES: tuple[str, ...] = ("en", "be", "ru")
REQUIRED_KEYS: tuple[str, ...] = ("issue", "language", "dates", "subject", "preheader")
_DATES = re.compile(r"^(?P<start>\S+)\s*\.\.\s*(?P<end>\S+)$")
_ISO_DAY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_WEEK_DAYS = 7
_EXAMPLE = "2021-12-13 .. 2021-12-19"

# key -> (line, value, column of the value); all 1-based
Header = dict[str, tuple[int, str, int]]
_MAX_SUBJECT = 150
MONTHS = (
    N_("January"), N_("February"), N_("March"), N_("April"), N_("May"), N_("June"),
    N_("July"), N_("August"), N_("September"), N_("October"), N_("November"), N_("December"),
)  # fmt: skip


def parse_header(
    lines: list[str], *, file: str, problems: list[Problem]
) -> tuple[Header, int | None]:
    if not lines or lines[0].strip() != "---":
        problems.append(
            Problem.coded(
                file,
                1,
                N_("the file must start with a '---' metadata header"),
                hint=N_("begin with '---', the 'key: value' lines, then '---'"),
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
                Problem.coded(
                    file,
                    index,
                    N_("header line %(line)r is not 'key: value'"),
                    hint=N_("write e.g. 'issue: 51'"),
                    line=raw,
                )
            )
            continue
        if key not in REQUIRED_KEYS:
            problems.append(
                Problem.coded(
                    file,
                    index,
                    N_("unknown header key %(key)r (known: %(known)s)"),
                    key=key,
                    known=", ".join(REQUIRED_KEYS),
                )
            )
            continue
        if key in header:
            problems.append(
                Problem.coded(
                    file,
                    index,
                    N_("header key %(key)r appears twice"),
                    hint=N_("keep one of them"),
                    key=key,
                )
            )
            continue
        column = len(raw) - len(value.lstrip()) + 1 if value.strip() else len(raw) + 1
        header[key] = (index, value.strip(), column)
    problems.append(
        Problem.coded(
            file,
            len(lines),
            N_("the metadata header is not closed by a '---' line"),
            hint=N_("add a '---' line after the last 'key: value' line"),
        )
    )
    return header, None


def parse_day(raw: str) -> tuple[date | None, Wording]:
    """``2021-12-13`` as a date, or None and why it is not one (a real calendar day)."""
    match = _ISO_DAY.match(raw)
    if match is None:
        return None, Wording.of(N_("%(day)r is not a date written YYYY-MM-DD"), day=raw)
    year, month, day = (int(part) for part in match.groups())
    if not 1 <= month <= 12:
        return None, Wording.of(
            N_("%(day)s is not a date: there is no month %(month)s"), day=raw, month=month
        )
    days = calendar.monthrange(year, month)[1]
    if not 1 <= day <= days:
        return None, Wording.of(
            N_("%(day)s is not a date: %(month_name)s %(year)s has %(days)s days"),
            day=raw,
            month_name=Wording(MONTHS[month - 1]),
            year=year,
            days=days,
        )
    return date(year, month, day), Wording("")


def parse_dates(
    raw: str, *, file: str, line: int, column: int, problems: list[Problem]
) -> tuple[date, date] | None:
    """The issue's week; an error for what is not a date range, a warning for one that is not
    one week long."""
    match = _DATES.match(raw)
    if match is None:
        problems.append(
            Problem.coded(
                file,
                line,
                N_("dates must be a range like %(example)s, not %(dates)r"),
                column=column,
                hint=N_("write the first and last day of the week, joined by '..'"),
                check="dates",
                example=_EXAMPLE,
                dates=raw,
            )
        )
        return None
    days: list[date] = []
    for part in ("start", "end"):
        day, why = parse_day(match[part])
        if day is None:
            problems.append(
                Problem.coded(
                    file,
                    line,
                    "%(why)s",
                    column=column + match.start(part),
                    hint=N_("write a real calendar day, e.g. %(example)s"),
                    check="dates",
                    why=why,
                    example=_EXAMPLE,
                )
            )
        else:
            days.append(day)
    if len(days) != 2:
        return None
    start, end = days
    if end < start:
        problems.append(
            Problem.coded(
                file,
                line,
                N_("the date range ends (%(end)s) before it starts (%(start)s)"),
                column=column + match.start("end"),
                hint=N_("write the first day first"),
                check="dates",
                end=end,
                start=start,
            )
        )
        return None
    length = (end - start).days + 1
    if length != _WEEK_DAYS:
        problems.append(
            Problem.coded(
                file,
                line,
                N_("the range %(start)s .. %(end)s is %(length)s days long, not one week")
                if length > 1
                else N_("the range %(start)s .. %(end)s is %(length)s day long, not one week"),
                column=column,
                hint=N_("a weekly issue covers seven days, e.g. %(example)s"),
                level="warning",
                check="dates",
                start=start,
                end=end,
                length=length,
                example=_EXAMPLE,
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
                Problem.coded(
                    file,
                    line,
                    N_("the header has no %(key)r"),
                    hint=N_("add a line '%(key)s: …' between the two '---' lines"),
                    key=key,
                )
            )
    if "issue" in header and header["issue"][1]:
        line, raw, column = header["issue"]
        if raw.isdigit() and int(raw) > 0:
            values["number"] = int(raw)
        else:
            problems.append(
                Problem.coded(
                    file,
                    line,
                    N_("issue must be a positive number, not %(value)r"),
                    column=column,
                    hint=N_("write e.g. 'issue: 51'"),
                    value=raw,
                )
            )
    if "language" in header and header["language"][1]:
        line, raw, column = header["language"]
        expected = Path(file).stem
        if raw not in LANGUAGES:
            problems.append(
                Problem.coded(
                    file,
                    line,
                    N_("language %(language)r is not one of %(languages)s"),
                    column=column,
                    hint=N_("write 'language: %(expected)s'"),
                    language=raw,
                    languages=LANGUAGES,
                    expected=expected,
                )
            )
        elif expected in LANGUAGES and raw != expected:
            problems.append(
                Problem.coded(
                    file,
                    line,
                    N_("language %(language)r does not match the file name"),
                    column=column,
                    hint=N_("write 'language: %(expected)s' or rename the file"),
                    language=raw,
                    expected=expected,
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
                    Problem.coded(
                        file,
                        line,
                        N_("%(key)s is %(length)s characters (at most %(limit)s)"),
                        column=column,
                        hint=N_("shorten it"),
                        key=key,
                        length=len(raw),
                        limit=_MAX_SUBJECT,
                    )
                )
            values[key] = raw
    return values
