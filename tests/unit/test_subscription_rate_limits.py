"""The per-IP sliding window and the response floor, on fake clocks."""

from __future__ import annotations

from services.subscription.timing import ResponseFloor
from shared.rate_limit import SlidingWindowLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_limit_per_key_within_the_window_then_released() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(limit=3, window_s=60, clock=clock)
    assert [limiter.allow("198.51.100.1") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("198.51.100.2"), "another client has its own budget"
    assert limiter.retry_after_s("198.51.100.1") == 61
    clock.now += 61
    assert limiter.allow("198.51.100.1")


def test_memory_is_bounded_by_forgetting_the_oldest_clients() -> None:
    limiter = SlidingWindowLimiter(limit=1, window_s=60, max_keys=2, clock=FakeClock())
    assert limiter.allow("a")
    assert limiter.allow("b")
    assert limiter.allow("c")
    assert limiter.allow("a"), "a was forgotten when c arrived"
    assert not limiter.allow("c")


def test_a_zero_limit_disables_the_limiter() -> None:
    limiter = SlidingWindowLimiter(limit=0, window_s=60, clock=FakeClock())
    assert all(limiter.allow("a") for _ in range(100))


async def test_fast_and_slow_answers_are_both_held_to_the_floor() -> None:
    clock = FakeClock()
    floor = ResponseFloor(0.2, jitter_s=0.0, clock=clock, sleep=clock.sleep)
    started = floor.start()
    clock.now += 0.05  # a cheap path (address already active)
    assert round(await floor.hold(started), 6) == 0.15
    started = floor.start()
    clock.now += 0.18  # an expensive path (new address: inserts and a publish)
    assert round(await floor.hold(started), 6) == 0.02
    assert round(clock.now - started, 6) == 0.2
    started = floor.start()
    clock.now += 0.5  # slower than the floor: nothing to add
    assert await floor.hold(started) == 0.0
