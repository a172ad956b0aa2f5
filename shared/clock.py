"""One source of time for every rule that depends on it (schedules, local hours, warm-up days).

Composition roots pass a :class:`SystemClock`; tests pass a :class:`FakeClock` and move it
forward, so a week of schedules runs in seconds on the real database and broker. Time is
always aware UTC; local hours are computed from it with :mod:`zoneinfo`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
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
