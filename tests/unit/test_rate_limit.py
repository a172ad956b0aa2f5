"""The suite's one limiter (``shared/rate_limit.py``) on a stepped clock: windows, costs,
check-then-charge, bounded memory."""

from __future__ import annotations

import pytest

from shared.rate_limit import SlidingWindowLimiter, client_key
from tests.support.stepped_clock import SteppedClock


def test_a_hit_leaves_the_window_exactly_window_seconds_later() -> None:
    clock = SteppedClock(500.0)
    limiter = SlidingWindowLimiter(limit=2, window_s=10, clock=clock)
    assert limiter.allow("k")
    clock.now += 4
    assert limiter.allow("k")
    assert not limiter.allow("k"), "two hits within 10 s fill the window"
    assert limiter.retry_after_s("k") == 7, "the first hit leaves 6 s from now; whole seconds"
    clock.now += 5.999
    assert limiter.blocked("k")
    clock.now += 0.001
    assert not limiter.blocked("k"), "the first hit is exactly 10 s old: gone"
    assert limiter.used("k") == 1


def test_refused_attempts_are_not_recorded() -> None:
    clock = SteppedClock(500.0)
    limiter = SlidingWindowLimiter(limit=1, window_s=10, clock=clock)
    assert limiter.allow("k")
    for _ in range(5):
        clock.now += 1
        assert not limiter.allow("k")
    clock.now += 5
    assert limiter.allow("k"), "the refusals did not extend the window"


def test_check_then_record_charges_only_what_the_caller_records() -> None:
    """The login pattern: ask first, charge only a wrong token."""
    clock = SteppedClock(500.0)
    limiter = SlidingWindowLimiter(limit=3, window_s=60, clock=clock)
    for _ in range(10):
        assert limiter.would_allow("10.0.0.1"), "asking costs nothing"
    for _ in range(3):
        limiter.record("10.0.0.1")
    assert limiter.blocked("10.0.0.1")
    limiter.record("10.0.0.1")  # recording past the limit is allowed and counted
    assert limiter.used("10.0.0.1") == 4
    assert not limiter.blocked("10.0.0.2")


def test_costs_count_units_and_a_cost_above_the_limit_costs_the_whole_limit() -> None:
    clock = SteppedClock(500.0)
    limiter = SlidingWindowLimiter(limit=10, window_s=60, clock=clock)
    assert limiter.allow("ip", cost=7)
    assert not limiter.would_allow("ip", cost=4)
    assert limiter.allow("ip", cost=3)
    assert limiter.allow("batch", cost=1000), "a batch passes on an empty window"
    assert limiter.used("batch") == 10
    assert not limiter.would_allow("batch")
    assert limiter.allow("zero", cost=0)
    assert limiter.used("zero") == 1, "an attempt costs at least one unit"


def test_memory_keeps_the_most_recently_seen_keys() -> None:
    limiter = SlidingWindowLimiter(limit=1, window_s=60, max_keys=2, clock=SteppedClock(500.0))
    assert limiter.allow("a")
    assert limiter.allow("b")
    assert not limiter.allow("a")  # a is seen again: b is now the oldest
    assert limiter.allow("c")
    assert not limiter.allow("a"), "a was kept"
    assert limiter.allow("b"), "b was forgotten when c arrived"


def test_a_zero_limit_lets_everything_through_and_records_nothing() -> None:
    limiter = SlidingWindowLimiter(limit=0, window_s=60, clock=SteppedClock(500.0))
    assert all(limiter.allow("a", cost=5) for _ in range(100))
    limiter.record("a")
    assert not limiter.blocked("a")
    assert limiter.retry_after_s("a") == 0


@pytest.mark.parametrize(("window_s", "max_keys"), [(0, 10), (-1, 10), (10, 0)])
def test_nonsense_settings_are_refused(window_s: float, max_keys: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        SlidingWindowLimiter(limit=1, window_s=window_s, max_keys=max_keys)


def test_clients_are_keyed_by_their_ipv4_address_or_their_ipv6_64() -> None:
    assert client_key("203.0.113.7") == "203.0.113.7"
    assert client_key("2001:db8:aa:bb::1") == client_key("2001:db8:aa:bb:ffff:1:2:3")
    assert client_key("2001:db8:aa:bb::1") == "2001:db8:aa:bb::/64"
    assert client_key("2001:db8:aa:bc::1") != client_key("2001:db8:aa:bb::1")
    assert client_key("::ffff:203.0.113.7") == "203.0.113.7", "IPv4-mapped is IPv4"
    assert client_key("64:ff9b::203.0.113.7") == "203.0.113.7", "NAT64 (RFC 6052) is IPv4"
    assert client_key("64:ff9b::198.51.100.1") != client_key("64:ff9b::203.0.113.7")
    assert client_key("fe80::1%eth0") == "fe80::/64"
    assert client_key("testclient") == "testclient"
    assert client_key(None) == client_key("") == "unknown"
