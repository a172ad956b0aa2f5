"""The pure rules of scheduling: local delivery hours, quiet hours, reading --at, cadence months,
and the settings that carry them."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from services.dispatcher.cadence import month_start
from services.dispatcher.local_hours import (
    case_sql,
    due_by_zone,
    in_quiet_hours,
    not_before,
    outside_quiet_hours,
    parse_local_time,
    reader_zone,
)
from services.dispatcher.settings import load_dispatcher_settings
from shared.clock import (
    SYSTEM_CLOCK,
    BadMoment,
    FakeClock,
    OffsetFileClock,
    local_moment,
    write_clock_offset,
)
from shared.settings import Settings, SettingsError, load_settings
from shared.warmup_ramp import Ramp

MINSK = ZoneInfo("Europe/Minsk")
NEW_YORK = ZoneInfo("America/New_York")
QUIET = (time(22, 0), time(7, 0))


def test_local_time_is_the_next_such_hour_in_the_readers_zone() -> None:
    start = datetime(2026, 12, 7, 5, 0, tzinfo=UTC)  # 08:00 in Minsk, 00:00 in New York
    assert not_before(start=start, where=MINSK, local_time=time(9), quiet=None) == datetime(
        2026, 12, 7, 6, 0, tzinfo=UTC
    )
    assert not_before(start=start, where=NEW_YORK, local_time=time(9), quiet=None) == datetime(
        2026, 12, 7, 14, 0, tzinfo=UTC
    )
    # 09:00 in Minsk has passed by 07:00 UTC: the next day's.
    later = datetime(2026, 12, 7, 7, 0, tzinfo=UTC)
    assert not_before(start=later, where=MINSK, local_time=time(9), quiet=None) == datetime(
        2026, 12, 8, 6, 0, tzinfo=UTC
    )


def test_a_local_time_in_the_quiet_hours_moves_to_their_end() -> None:
    start = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    due = not_before(start=start, where=MINSK, local_time=time(23, 30), quiet=QUIET)
    assert due.astimezone(MINSK) == datetime(2026, 12, 8, 7, 0, tzinfo=MINSK)


def test_a_send_without_local_time_waits_only_through_the_quiet_hours() -> None:
    night = datetime(2026, 12, 7, 21, 0, tzinfo=UTC)  # 00:00 in Minsk, 16:00 in New York
    assert not_before(start=night, where=NEW_YORK, local_time=None, quiet=QUIET) == night
    due = not_before(start=night, where=MINSK, local_time=None, quiet=QUIET)
    assert due.astimezone(MINSK) == datetime(2026, 12, 8, 7, 0, tzinfo=MINSK)
    assert not_before(start=night, where=MINSK, local_time=None, quiet=None) == night


def test_a_later_attempt_inside_the_quiet_hours_moves_to_their_end_in_the_readers_zone() -> None:
    retry = datetime(2027, 3, 1, 19, 0, tzinfo=UTC)  # 22:00 in Minsk, 14:00 in New York
    assert outside_quiet_hours(retry, where=MINSK, quiet=QUIET) == datetime(
        2027, 3, 2, 7, 0, tzinfo=MINSK
    )
    assert outside_quiet_hours(retry, where=NEW_YORK, quiet=QUIET) == retry
    assert outside_quiet_hours(retry, where=MINSK, quiet=None) == retry
    # After midnight the end is the same morning's 07:00; at 07:00 itself nothing moves.
    small_hours = datetime(2027, 3, 1, 23, 30, tzinfo=UTC)  # 02:30 in Minsk
    assert outside_quiet_hours(small_hours, where=MINSK, quiet=QUIET) == datetime(
        2027, 3, 2, 7, 0, tzinfo=MINSK
    )
    seven = datetime(2027, 3, 2, 7, 0, tzinfo=MINSK)
    assert outside_quiet_hours(seven, where=MINSK, quiet=QUIET) == seven


def test_a_reader_without_a_zone_has_their_editions_default() -> None:
    settings = load_settings(mode="test")
    assert reader_zone(settings, time_zone=None, language="be") == MINSK
    assert reader_zone(settings, time_zone=None, language="en") == ZoneInfo("Europe/London")
    assert reader_zone(settings, time_zone="America/New_York", language="be") == NEW_YORK
    assert reader_zone(settings, time_zone="Mars/Base", language="ru") == MINSK


def test_daylight_saving_days_keep_nine_oclock_local() -> None:
    # New York springs forward on 2027-03-14: 09:00 is 13:00 UTC that day, 14:00 the day before.
    before = datetime(2027, 3, 13, 0, 0, tzinfo=UTC)
    after = datetime(2027, 3, 14, 10, 0, tzinfo=UTC)
    assert not_before(start=before, where=NEW_YORK, local_time=time(9), quiet=None).hour == 14
    assert not_before(start=after, where=NEW_YORK, local_time=time(9), quiet=None).hour == 13


@pytest.mark.parametrize(
    ("moment", "quiet"),
    [
        (time(22), True),
        (time(23, 59), True),
        (time(0), True),
        (time(6, 59), True),
        (time(7), False),
        (time(12), False),
        (time(21, 59), False),
    ],
)
def test_quiet_hours_span_midnight(moment: time, quiet: bool) -> None:
    assert in_quiet_hours(moment, QUIET) is quiet
    assert in_quiet_hours(moment, (time(1), time(5))) is (time(1) <= moment < time(5))


def test_zones_that_share_the_default_time_fall_into_the_else_branch() -> None:
    start = datetime(2026, 12, 7, 0, 0, tzinfo=UTC)
    base, times = due_by_zone(
        ["Europe/Minsk", "Europe/Moscow", "Asia/Tokyo", "Not/AZone"],
        default="Europe/Minsk",
        start=start,
        local_time=time(9),
        quiet=None,
    )
    assert base == datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
    assert set(times) == {"Asia/Tokyo"}  # Moscow is UTC+3 too; an unknown zone is the default
    sql, params = case_sql(times, column="s.time_zone")
    assert sql == "CASE s.time_zone WHEN :zone_0 THEN :due_0 ELSE :due_default END"
    assert params == {"zone_0": "Asia/Tokyo", "due_0": times["Asia/Tokyo"]}
    assert case_sql({}, column="s.time_zone") == (":due_default", {})


def test_at_and_tz_read_as_a_utc_moment() -> None:
    assert local_moment("2026-12-07 09:00", tz="Europe/Minsk") == datetime(
        2026, 12, 7, 6, 0, tzinfo=UTC
    )
    assert local_moment("2026-12-07T09:00+01:00", tz="Europe/Minsk").hour == 8
    with pytest.raises(BadMoment, match="time zone"):
        local_moment("2026-12-07 09:00", tz="Mars/Base")
    with pytest.raises(BadMoment, match="date and time"):
        local_moment("next monday", tz="UTC")
    with pytest.raises(ValueError, match="HH:MM"):
        parse_local_time("09:00:30")


def test_the_fake_clock_only_moves_forward() -> None:
    clock = FakeClock(datetime(2027, 1, 1, tzinfo=UTC))
    assert clock.advance(timedelta(minutes=5)).minute == 5
    with pytest.raises(ValueError, match="back"):
        clock.set(datetime(2026, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="aware"):
        FakeClock(datetime(2027, 1, 1))  # the naive time is the point


def test_an_offset_file_clock_moves_when_its_file_is_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "clock"
    clock = OffsetFileClock(path)
    assert abs(clock.now() - datetime.now(UTC)) < timedelta(seconds=1), "no file: no offset"
    target = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
    write_clock_offset(path, now=target)
    assert timedelta(0) <= clock.now() - target < timedelta(seconds=1)
    write_clock_offset(path, now=target + timedelta(days=1))
    assert timedelta(days=1) <= clock.now() - target < timedelta(days=1, seconds=1)
    assert OffsetFileClock(path).now() - clock.now() < timedelta(seconds=1), "one time for all"


def test_a_dispatcher_clock_file_is_refused_outside_test_mode(tmp_path: Path) -> None:
    path = tmp_path / "clock"
    with pytest.raises(SettingsError, match="NEWSLETTER_DISPATCH_CLOCK_FILE"):
        load_dispatcher_settings(mode="demo", var_dir=tmp_path, dispatch_clock_file=path)
    settings = load_dispatcher_settings(mode="test", dispatch_clock_file=path)
    assert isinstance(settings.clock, OffsetFileClock)
    assert load_dispatcher_settings(mode="test").clock is SYSTEM_CLOCK


def test_the_month_of_a_cadence_starts_at_midnight_utc_on_the_first() -> None:
    assert month_start(datetime(2027, 3, 31, 23, 59, tzinfo=UTC)) == datetime(
        2027, 3, 1, tzinfo=UTC
    )


def test_a_ramp_caps_each_day_then_is_warm() -> None:
    ramp = Ramp(domain="news.example", day=1, caps=(50, 100, 200))
    assert [Ramp(ramp.domain, d, ramp.caps).cap for d in (1, 2, 3, 4)] == [50, 100, 200, None]


def test_schedule_settings_fail_fast_with_what_to_set() -> None:
    settings = Settings(mode="test", quiet_hours="22:00-07:00", warmup_caps="50,100,200")
    assert settings.quiet_window == QUIET
    assert settings.warmup_cap_list == (50, 100, 200)
    assert settings.time_zone_for("be") == "Europe/Minsk"
    assert settings.time_zone_for("en") == "Europe/London"
    for field, value in [
        ("quiet_hours", "late"),
        ("warmup_caps", "50,-1"),
        ("default_time_zones", "be=Mars/Base"),
        ("default_time_zones", "de=Europe/Berlin"),
    ]:
        with pytest.raises(SettingsError, match=f"NEWSLETTER_{field.upper()}"):
            load_settings(mode="test", **{field: value})
