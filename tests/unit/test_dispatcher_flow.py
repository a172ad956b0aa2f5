"""Flow control: rate limits, slow-down on throttling replies, the per-domain breaker."""

from __future__ import annotations

import pytest

from services.dispatcher.flow import FlowControl, RateLimiter
from services.dispatcher.outcomes import Outcome
from services.dispatcher.retry import tier_for, window_exhausted
from shared.messaging.topology import RETRY_TIERS


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_rate_limiter_spaces_slots_after_its_burst() -> None:
    clock = Clock()
    limiter = RateLimiter(10.0, burst=2, clock=clock)
    waits = [limiter.reserve() for _ in range(5)]
    assert waits[:2] == [0.0, 0.0]
    assert waits[2:] == pytest.approx([0.0, 0.1, 0.2])


def test_throttling_replies_slow_one_domain_and_successes_speed_it_up() -> None:
    flow = FlowControl(clock=Clock())
    throttled = Outcome("deferred", 421, "slow down", "rcpt", throttle=True)
    for _ in range(3):
        flow.record("slow.example", throttled)
    assert flow.pace("slow.example") == pytest.approx(0.2)
    assert flow.pace("fast.example") == 0.0
    for _ in range(20):
        flow.record("slow.example", Outcome("sent", 250))
    assert flow.pace("slow.example") == 0.0


def test_a_storm_of_policy_refusals_opens_the_breaker_of_that_domain_only() -> None:
    clock = Clock()
    flow = FlowControl(breaker_threshold=5, breaker_window_s=10, breaker_cooldown_s=60, clock=clock)
    refused = Outcome("failed", 554, "5.7.1 policy", "rcpt", policy=True)
    opened = [flow.record("storm.example", refused) for _ in range(5)]
    assert opened == [False, False, False, False, True]
    assert flow.is_open("storm.example")
    assert not flow.is_open("calm.example")
    clock.now += 61
    assert not flow.is_open("storm.example")


def test_incidents_outside_the_window_do_not_count() -> None:
    clock = Clock()
    flow = FlowControl(breaker_threshold=3, breaker_window_s=10, clock=clock)
    refused = Outcome("failed", 554, "5.7.1", "rcpt", policy=True)
    flow.record("d.example", refused)
    flow.record("d.example", refused)
    clock.now += 11
    assert flow.record("d.example", refused) is False


def test_retry_tiers_repeat_the_last_and_the_window_ends_retries() -> None:
    from datetime import UTC, datetime, timedelta

    tiers = tuple(t for t in RETRY_TIERS if t.label in {"1m", "10m", "1h", "6h"})
    assert [tier_for(tiers, n).label for n in range(6)] == ["1m", "10m", "1h", "6h", "6h", "6h"]
    start = datetime(2026, 11, 1, tzinfo=UTC)
    six_h = tiers[-1]
    assert not window_exhausted(
        first_attempt_at=start, tier=six_h, window_s=3 * 86400, now=start + timedelta(days=2)
    )
    assert window_exhausted(
        first_attempt_at=start, tier=six_h, window_s=3 * 86400, now=start + timedelta(hours=67)
    )


def test_an_alert_opens_a_domain_for_its_pause_and_never_shortens_a_longer_one() -> None:
    clock = Clock()
    flow = FlowControl(clock=clock)
    assert flow.open_for("blocked.example", 30.0)
    assert not flow.open_for("blocked.example", 10.0), "a shorter pause changes nothing"
    assert flow.is_open("blocked.example")
    assert not flow.is_open("other.example")
    clock.now += 20
    assert flow.open_remaining("blocked.example") == pytest.approx(10.0)
    clock.now += 10
    assert not flow.is_open("blocked.example")
