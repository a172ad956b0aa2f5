"""Flow control: rate limits, slow-down on throttling replies, the per-domain breaker."""

from __future__ import annotations

import pytest

from services.dispatcher.flow import MAX_PACE_S, FlowControl, RateLimiter
from services.dispatcher.outcomes import Outcome
from services.dispatcher.retry import Attempt, settle_attempt, tier_for, window_exhausted
from services.dispatcher.settings import load_dispatcher_settings
from shared.messaging.topology import RETRY_TIERS
from shared.settings import SettingsError
from tests.support.stepped_clock import SteppedClock


def test_a_rate_limiter_spaces_slots_after_its_burst() -> None:
    clock = SteppedClock()
    limiter = RateLimiter(10.0, burst=2, clock=clock)
    waits = [limiter.reserve() for _ in range(5)]
    assert waits[:2] == [0.0, 0.0]
    assert waits[2:] == pytest.approx([0.0, 0.1, 0.2])


def test_throttling_replies_slow_one_domain_and_successes_speed_it_up() -> None:
    flow = FlowControl(clock=SteppedClock())
    throttled = Outcome("deferred", 421, "slow down", "rcpt", throttle=True)
    for _ in range(3):
        flow.record("slow.example", throttled)
    assert flow.pace("slow.example") == pytest.approx(0.2)
    assert flow.pace("fast.example") == 0.0
    for _ in range(20):
        flow.record("slow.example", Outcome("sent", 250))
    assert flow.pace("slow.example") == 0.0


def test_a_storm_of_policy_refusals_opens_the_breaker_of_that_domain_only() -> None:
    clock = SteppedClock()
    flow = FlowControl(breaker_threshold=5, breaker_window_s=10, breaker_cooldown_s=60, clock=clock)
    refused = Outcome("failed", 554, "5.7.1 policy", "rcpt", policy=True)
    opened = [flow.record("storm.example", refused) for _ in range(5)]
    assert opened == [False, False, False, False, True]
    assert flow.is_open("storm.example")
    assert not flow.is_open("calm.example")
    clock.now += 61
    assert not flow.is_open("storm.example")


def test_incidents_outside_the_window_do_not_count() -> None:
    clock = SteppedClock()
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


def test_an_attempt_takes_its_number_from_the_retry_header_and_fails_past_the_window() -> None:
    from datetime import UTC, datetime, timedelta
    from types import SimpleNamespace

    tiers = tuple(t for t in RETRY_TIERS if t.label in {"1m", "10m", "1h", "6h"})
    start = datetime(2026, 11, 1, tzinfo=UTC)
    late = start + timedelta(hours=67)

    def settle(headers: dict[str, object] | None, status: str, now: datetime) -> object:
        message = SimpleNamespace(headers=headers)
        return settle_attempt(
            message, status, tiers=tiers, first_attempt_at=start, window_s=3 * 86400, now=now
        )

    assert settle(None, "deferred", start) == Attempt(0, tiers[0], "deferred")
    assert settle({"x-retry": 5}, "deferred", start) == Attempt(5, tiers[-1], "deferred")
    assert settle({"x-retry": "junk"}, "deferred", start) == Attempt(0, tiers[0], "deferred")
    assert settle({"x-retry": 5}, "deferred", late).status == "failed"
    assert settle({"x-retry": 5}, "sent", late).status == "sent"
    assert settle({"x-retry": 5}, "bounced", late).status == "bounced"


def test_an_alert_opens_a_domain_for_its_pause_and_never_shortens_a_longer_one() -> None:
    clock = SteppedClock()
    flow = FlowControl(clock=clock)
    assert flow.open_for("blocked.example", 30.0)
    assert not flow.open_for("blocked.example", 10.0), "a shorter pause changes nothing"
    assert flow.is_open("blocked.example")
    assert not flow.is_open("other.example")
    clock.now += 20
    assert flow.open_remaining("blocked.example") == pytest.approx(10.0)
    clock.now += 10
    assert not flow.is_open("blocked.example")


GREYLISTED = Outcome("deferred", 451, "4.7.1 greylisted, try again", "rcpt", throttle=True)


SENT = Outcome("sent", 250)


def replay(flow: FlowControl, clock: SteppedClock, domain: str, *, every: int, n: int) -> list[int]:
    """``n`` replies 300 a second, one in ``every`` a 451 at RCPT; the limit after each."""
    limits: list[int] = []
    for i in range(n):
        clock.now += 1 / 300
        assert not flow.record(domain, GREYLISTED if i % every == every - 1 else SENT), (
            f"breaker opened at reply {i}"
        )
        limits.append(flow.concurrency(domain))
    return limits


def test_one_rcpt_in_ten_answered_451_slows_the_domain_but_never_opens_its_breaker() -> None:
    clock = SteppedClock()
    flow = FlowControl(domain_concurrency=16, clock=clock)
    limits = replay(flow, clock, "grey.example", every=10, n=3000)
    assert not flow.is_open("grey.example")
    assert min(limits) < 16, "the 451s did slow the domain"
    assert min(limits) >= 12, f"one 451 in ten takes 5 % off a round, not half: {min(limits)}"
    assert flow.pace("grey.example") == 0.0, "no pause between messages at 10 % 451s"
    assert flow.concurrency("other.example") == 16


def test_half_the_rcpts_answered_451_settle_the_domain_at_a_few_slots_above_the_floor() -> None:
    clock = SteppedClock()
    flow = FlowControl(
        domain_concurrency=16, domain_concurrency_floor=2, breaker_threshold=10**6, clock=clock
    )
    limits = replay(flow, clock, "busy.example", every=2, n=3000)
    assert max(limits[-500:]) <= 4, f"half the replies said slow down: {max(limits[-500:])}"
    assert min(limits) >= 2, "never below the floor"
    assert flow.concurrency("calm.example") == 16, "another domain keeps its slots"


def test_only_slow_down_at_the_floor_spaces_the_messages_out() -> None:
    clock = SteppedClock()
    flow = FlowControl(
        domain_concurrency=16, domain_concurrency_floor=2, breaker_threshold=10**6, clock=clock
    )
    for _ in range(200):
        clock.now += 0.01
        flow.record("refusing.example", GREYLISTED)
    assert flow.concurrency("refusing.example") == 2
    assert flow.pace("refusing.example") > 0.0
    for _ in range(50):
        flow.record("refusing.example", SENT)
    assert flow.pace("refusing.example") == 0.0, "successes take the pause away again"
    assert flow.concurrency("refusing.example") > 2, "and add slots, one per round"


def test_a_domain_answering_mostly_slow_down_opens_its_breaker_and_reopens_half_open() -> None:
    clock = SteppedClock()
    flow = FlowControl(
        domain_concurrency=16, breaker_threshold=20, breaker_cooldown_s=30, clock=clock
    )
    replies = 0
    while not flow.record("swamped.example", GREYLISTED if replies % 3 else Outcome("sent", 250)):
        replies += 1
        clock.now += 0.01
        assert replies < 100, "two thirds of the replies said slow down: the breaker must open"
    assert replies >= 20, "not before the threshold"
    assert flow.is_open("swamped.example")
    clock.now += 31
    assert not flow.is_open("swamped.example")
    assert flow.concurrency("swamped.example") == 1, "half-open: one slot first"
    for _ in range(3):
        flow.record("swamped.example", Outcome("sent", 250))
    assert flow.concurrency("swamped.example") == 3, "each round of successes adds a slot"


def test_a_host_saying_slow_down_halves_concurrency_at_most_once_a_second() -> None:
    clock = SteppedClock()
    flow = FlowControl(domain_concurrency=16, domain_concurrency_floor=2, clock=clock)
    closing = Outcome("deferred", 421, "4.7.0 too many connections", "mail", throttle=True)
    assert closing.host_throttle
    assert not GREYLISTED.host_throttle
    for _ in range(5):
        flow.record("d.example", closing)
    assert flow.concurrency("d.example") == 8
    clock.now += 1.0
    flow.record("d.example", closing)
    assert flow.concurrency("d.example") == 4
    for _ in range(3):
        clock.now += 1.0
        flow.record("d.example", closing)
    assert flow.concurrency("d.example") == 2, "halved down to the floor, no further"


async def test_the_adaptive_limit_admits_no_more_than_its_current_size() -> None:
    import asyncio

    from services.dispatcher.flow import AdaptiveLimit

    slots = AdaptiveLimit(4, floor=1)
    slots.cut()  # 2
    peak = 0
    inside = 0

    async def use() -> None:
        nonlocal inside, peak
        await slots.acquire()
        inside += 1
        peak = max(peak, inside)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        inside -= 1
        slots.release()

    await asyncio.gather(*(use() for _ in range(20)))
    assert peak == 2
    assert slots.in_use == 0


async def test_a_free_slot_is_taken_without_waiting_and_a_full_domain_says_so() -> None:
    from services.dispatcher.flow import AdaptiveLimit

    slots = AdaptiveLimit(2)
    assert slots.try_acquire(), "a free slot, taken at once"
    assert slots.try_acquire(), "the second free slot, taken at once"
    assert not slots.try_acquire(), "the third must wait (acquire), not be taken"
    assert slots.in_use == 2
    slots.release()
    assert slots.try_acquire(), "a released slot is free again"
    flow = FlowControl(domain_concurrency=1)
    async with flow.slot("example.org"):
        assert flow.concurrency("example.org") == 1
    async with flow.slot("example.org"):  # the slot was given back
        pass


def test_the_defaults_let_a_full_prefetch_paced_at_the_slowest_end_within_its_lease() -> None:
    """Every job of the prefetch claimed for one paced domain: the last one's wait for its slot
    must end before its lease does, or another process could take the delivery over."""
    settings = load_dispatcher_settings(mode="test")
    assert settings.dispatch_prefetch * MAX_PACE_S < settings.dispatch_lease_s


@pytest.mark.parametrize(
    ("overrides", "longest_wait"),
    [
        pytest.param({"dispatch_prefetch": 600}, "900", id="prefetch-x-pace"),
        pytest.param({"dispatch_domain_rate": 0.5}, "1750", id="a-slow-domain-rate"),
        pytest.param(
            {"dispatch_prefetch": 200, "dispatch_rate_limit": 0.25, "dispatch_lease_s": 60},
            "1100",
            id="a-short-lease",
        ),
    ],
)
def test_settings_whose_longest_wait_for_a_slot_outlasts_the_lease_are_refused(
    overrides: dict[str, float], longest_wait: str
) -> None:
    with pytest.raises(SettingsError, match=rf"may wait {longest_wait} s .*LEASE_S") as refused:
        load_dispatcher_settings(mode="test", **overrides)
    assert "Lower the prefetch or raise the lease" in str(refused.value)


def test_a_slow_rate_is_accepted_with_a_lease_long_enough_for_it() -> None:
    settings = load_dispatcher_settings(
        mode="test", dispatch_domain_rate=0.5, dispatch_lease_s=1800.0
    )
    assert settings.dispatch_domain_rate == 0.5
