"""Flow control: a global rate, per-domain concurrency and rate, slow-down and circuit breaker.

Replies that mean "slow down" (421, 451, 4.7.x) double the pause between two messages to that
domain; successes shrink it again. Enough throttling or policy replies within a window open the
domain's circuit breaker: its jobs are held (not attempted, not failed) until the cooldown ends,
while other domains keep flowing. A ``DomainPolicyAlerted`` event opens it too
(:meth:`FlowControl.open_for`, fed by :mod:`services.dispatcher.domain_alerts`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from services.dispatcher.outcomes import Outcome

Clock = Callable[[], float]
MIN_PACE_S = 0.05
MAX_PACE_S = 5.0


class RateLimiter:
    """Spaces acquisitions ``1/rate`` seconds apart (with a small burst); 0 means unlimited."""

    def __init__(self, rate: float, *, burst: int = 10, clock: Clock = time.monotonic) -> None:
        self.rate = rate
        self._burst = burst
        self._clock = clock
        self._next = 0.0

    def reserve(self) -> float:
        """Take one slot now and return how long to wait before using it."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        interval = 1.0 / self.rate
        start = max(self._next, now - interval * self._burst)
        self._next = start + interval
        return max(0.0, start - now)

    async def acquire(self) -> None:
        wait = self.reserve()
        if wait > 0:
            await asyncio.sleep(wait)


@dataclass
class DomainState:
    semaphore: asyncio.Semaphore
    limiter: RateLimiter
    pace_s: float = 0.0  # adaptive pause between messages, raised by throttling replies
    next_at: float = 0.0
    incidents: deque[float] = field(default_factory=deque)
    open_until: float = 0.0


class FlowControl:
    """Decides when a message to a domain may go, and learns from the replies."""

    def __init__(
        self,
        *,
        global_rate: float = 0.0,
        domain_concurrency: int = 16,
        domain_rate: float = 0.0,
        breaker_threshold: int = 20,
        breaker_window_s: float = 30.0,
        breaker_cooldown_s: float = 60.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self._global = RateLimiter(global_rate, clock=clock)
        self._domain_concurrency = domain_concurrency
        self._domain_rate = domain_rate
        self._threshold = breaker_threshold
        self._window = breaker_window_s
        self._cooldown = breaker_cooldown_s
        self._clock = clock
        self._domains: dict[str, DomainState] = {}

    def _state(self, domain: str) -> DomainState:
        state = self._domains.get(domain)
        if state is None:
            state = DomainState(
                semaphore=asyncio.Semaphore(self._domain_concurrency),
                limiter=RateLimiter(self._domain_rate, clock=self._clock),
            )
            self._domains[domain] = state
        return state

    def is_open(self, domain: str) -> bool:
        """True while the domain's circuit breaker holds its mail back."""
        state = self._domains.get(domain)
        return state is not None and self._clock() < state.open_until

    def open_remaining(self, domain: str) -> float:
        """Seconds until the domain's breaker closes (0 when it is closed)."""
        state = self._domains.get(domain)
        return 0.0 if state is None else max(0.0, state.open_until - self._clock())

    def open_for(self, domain: str, seconds: float) -> bool:
        """Open the domain's breaker for ``seconds`` from now (an alert from elsewhere, e.g. a
        policy storm seen in bounce reports); never shortens a longer pause. True if it
        extended the pause."""
        state = self._state(domain)
        until = self._clock() + seconds
        if until <= state.open_until:
            return False
        state.open_until = until
        return True

    def pace(self, domain: str) -> float:
        state = self._domains.get(domain)
        return state.pace_s if state else 0.0

    @asynccontextmanager
    async def slot(self, domain: str) -> AsyncIterator[None]:
        """Wait for the global rate, the domain's concurrency, rate and pace; then send."""
        state = self._state(domain)
        await self._global.acquire()
        async with state.semaphore:
            await state.limiter.acquire()
            if state.pace_s > 0:
                now = self._clock()
                start = max(state.next_at, now)
                state.next_at = start + state.pace_s
                if start > now:
                    await asyncio.sleep(start - now)
            yield

    def record(self, domain: str, outcome: Outcome) -> bool:
        """Learn from one outcome; True if this outcome opened the breaker."""
        state = self._state(domain)
        if outcome.throttle:
            state.pace_s = min(MAX_PACE_S, max(MIN_PACE_S, state.pace_s * 2))
        elif outcome.status == "sent" and state.pace_s > 0:
            state.pace_s = 0.0 if state.pace_s <= MIN_PACE_S else state.pace_s * 0.8
        if not (outcome.throttle or outcome.policy):
            return False
        now = self._clock()
        state.incidents.append(now)
        while state.incidents and state.incidents[0] < now - self._window:
            state.incidents.popleft()
        if len(state.incidents) >= self._threshold and now >= state.open_until:
            state.open_until = now + self._cooldown
            state.incidents.clear()
            return True
        return False
