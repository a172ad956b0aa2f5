"""The metadata header of an issue file: ``key: value`` lines between two ``---`` lines."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

from services.renderer.errors import Problem

LANGUAGES: tuple[str, ...] = ("en", "be", "ru")
REQUIRED_KEYS: tuple[str, ...] = ("issue", "language", "dates", "subject", "preheader")
_DATES = re.compile(r"^(\d{4}-\d{2}-\d{2})\s*\.\.\s*(\d{4}-\d{2}-\d{2})$")
_MAX_SUBJECT = 150


def parse_header(
    lines: list[str], *, file: str, problems: list[Problem]
) -> tuple[dict[str, tuple[int, str]], int | None]:
    if not lines or lines[0].strip() != "---":
        problems.append(Problem(file, 1, "the file must start with a '---' metadata header"))
        return {}, None
    header: dict[str, tuple[int, str]] = {}
    for index, raw in enumerate(lines[1:], start=2):
        if raw.strip() == "---":
            return header, index
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        key, sep, value = raw.partition(":")
        key = key.strip().lower()
        if not sep or not key:
            problems.append(Problem(file, index, f"header line {raw!r} is not 'key: value'"))
            continue
        if key not in REQUIRED_KEYS:
            problems.append(
                Problem(
                    file, index, f"unknown header key {key!r} (known: {', '.join(REQUIRED_KEYS)})"
                )
            )
            continue
        if key in header:
            problems.append(Problem(file, index, f"header key {key!r} appears twice"))
            continue
        header[key] = (index, value.strip())
    problems.append(Problem(file, len(lines), "the metadata header is not closed by a '---' line"))
    return header, None


def header_values(  # noqa: PLR0912 - one branch per header key reads best
    header: dict[str, tuple[int, str]], *, file: str, problems: list[Problem]
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
            problems.append(Problem(file, line, f"the header has no {key!r}"))
    if "issue" in header and header["issue"][1]:
        line, raw = header["issue"]
        if raw.isdigit() and int(raw) > 0:
            values["number"] = int(raw)
        else:
            problems.append(Problem(file, line, f"issue must be a positive number, not {raw!r}"))
    if "language" in header and header["language"][1]:
        line, raw = header["language"]
        expected = Path(file).stem
        if raw not in LANGUAGES:
            problems.append(Problem(file, line, f"language {raw!r} is not one of {LANGUAGES}"))
        elif expected in LANGUAGES and raw != expected:
            problems.append(Problem(file, line, f"language {raw!r} does not match the file name"))
        values["language"] = raw
    if "dates" in header and header["dates"][1]:
        line, raw = header["dates"]
        match = _DATES.match(raw)
        try:
            if match is None:
                raise ValueError(raw)
            start, end = date.fromisoformat(match[1]), date.fromisoformat(match[2])
        except ValueError:
            problems.append(
                Problem(file, line, f"dates must look like 2021-12-13 .. 2021-12-19, not {raw!r}")
            )
        else:
            if end < start:
                problems.append(Problem(file, line, "the date range ends before it starts"))
            values["date_from"], values["date_to"] = start, end
    for key in ("subject", "preheader"):
        if key in header:
            line, raw = header[key]
            if len(raw) > _MAX_SUBJECT:
                problems.append(
                    Problem(file, line, f"{key} is {len(raw)} characters (at most {_MAX_SUBJECT})")
                )
            values[key] = raw
    return values
