"""Answers that take the same time whatever the address's state (no enumeration by timing).

A new address costs inserts and a publish, an active one a single SELECT: the difference is
measurable. Every signup answer is held until at least ``floor_s`` has passed since the request
began, plus a little jitter, so what an observer times is the floor, not our work.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable


class ResponseFloor:
    def __init__(
        self,
        floor_s: float,
        *,
        jitter_s: float = 0.02,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._floor = floor_s
        self._jitter = jitter_s
        self._clock = clock
        self._sleep = sleep

    def start(self) -> float:
        return self._clock()

    async def hold(self, started: float) -> float:
        """Sleep until the floor (plus jitter) has passed; returns how long it slept."""
        if self._floor <= 0:
            return 0.0
        target = self._floor + random.uniform(0.0, self._jitter)
        remaining = target - (self._clock() - started)
        if remaining > 0:
            await self._sleep(remaining)
            return remaining
        return 0.0
