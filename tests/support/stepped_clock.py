"""A clock that tests move by hand (``clock.now += 5``), called like ``time.monotonic``."""

from __future__ import annotations


class SteppedClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now
