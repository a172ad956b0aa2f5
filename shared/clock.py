"""One source of time for every rule that depends on it (schedules, local hours, warm-up days).

Composition roots pass a :class:`SystemClock`; tests pass a :class:`FakeClock` and move it
forward, so a week of schedules runs in seconds on the real database and broker. Tests of real
processes (``python -m services.dispatcher``) give each process an :class:`OffsetFileClock`
on one file (``NEWSLETTER_DISPATCH_CLOCK_FILE``, test mode only) and move every process's time
at once by rewriting it. Time is always aware UTC; local hours are computed from it with
:mod:`zoneinfo`.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, aware UTC."""
        ...


class SystemClock:
    """The machine's clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


SYSTEM_CLOCK = SystemClock()


class FakeClock:
    """A clock that moves only when told to (tests)."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("a FakeClock starts at an aware time")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        if delta < timedelta(0):
            raise ValueError("time does not go back")
        self._now += delta
        return self._now

    def set(self, when: datetime) -> datetime:
        when = when.astimezone(UTC)
        if when < self._now:
            raise ValueError("time does not go back")
        self._now = when
        return self._now


class OffsetFileClock:
    """The machine's clock moved by the seconds written in a file (tests of real processes).

    Time flows as on the machine; :func:`write_clock_offset` moves it for every process that
    reads the file. A missing file is no offset. The file is read again only when it changed.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._seen: tuple[int, int, int] | None = None
        self._offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self._current_offset()

    def _current_offset(self) -> timedelta:
        try:
            stat = os.stat(self._path)
        except FileNotFoundError:
            return timedelta(0)
        seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if seen != self._seen:
            self._offset = timedelta(seconds=float(self._path.read_text().strip() or 0))
            self._seen = seen
        return self._offset


def write_clock_offset(path: Path, *, now: datetime) -> None:
    """Make every :class:`OffsetFileClock` on ``path`` read ``now`` at this moment (and flow on
    from there). Written whole, then renamed: a reader never sees half a number."""
    offset = (now - datetime.now(UTC)).total_seconds()
    part = path.with_name(path.name + ".part")
    part.write_text(f"{offset:.6f}\n")
    os.replace(part, path)


class BadMoment(ValueError):
    """A date and time, or a time zone, that cannot be read."""


def local_moment(value: str, *, tz: str) -> datetime:
    """``"2026-12-07 09:00"`` in zone ``tz`` -> the aware UTC moment; :class:`BadMoment`
    otherwise. A time with its own offset (``...T09:00+03:00``) keeps it."""
    try:
        where = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise BadMoment(f"unknown time zone {tz!r} (an IANA name such as Europe/Minsk)") from err
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError as err:
        raise BadMoment(f"{value!r} is not a date and time such as '2026-12-07 09:00'") from err
    if parsed.tzinfo is None:
        # The UTC round trip puts a wall time that does not exist (spring forward) on a real one.
        parsed = parsed.replace(tzinfo=where)
    return parsed.astimezone(UTC)
