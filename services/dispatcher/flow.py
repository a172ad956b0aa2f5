"""Flow control: a global rate, per-domain concurrency and rate, slow-down and circuit breaker.

How a domain's concurrency follows its replies is the way MTAs treat 4xx replies. RFC 5321
§4.5.4.1 retries a *recipient* that got a 4yz later (here: its row is ``deferred`` with a
``due_at``, the reconciler publishes it when due, and nothing waits on a connection or a slot
meanwhile); host-wide state is for a host that cannot take mail. So two kinds of "slow down":

- *The host* says it (421 in any phase, a 4xx "slow down" at connect or MAIL): concurrency is
  halved at once (at most once per :data:`BACKOFF_S`) and the pause between two of the
  domain's messages doubles.
- *One recipient* is answered 450/451/452 or 4.7.x at RCPT or after DATA (greylisting, a
  per-recipient rate): only the *share* of such replies slows the domain, once per round (one
  round = as many replies as the domain's current concurrency, TCP's round trip). At the end
  of a round the window grows by its share of successes (additive increase: one slot per
  round of successes) and, if any reply of the round was a slow-down, shrinks by half that
  share (``window *= 1 - share/2``, DCTCP's rule, RFC 8257 §3.3): a round of nothing but
  451s halves it, one 451 in ten takes 5 % off. So 10 % 451s keep a domain near its ceiling,
  a domain answering half its RCPTs 451 settles at a few slots, and no cut goes below
  ``floor``. Only at the floor, with at least half a round answered "slow down", does the
  pause between messages grow too.

The breaker opens on policy refusals (5.7.x, "blocked") at ``breaker_threshold`` within the
window, and on slow-down replies only when they are most of the domain's replies
(``throttle_ratio`` of the window, and at least ``breaker_threshold`` of them). While open,
the domain's jobs are held (parked in the outbox, neither attempted nor failed) until the
cooldown ends, while other domains keep flowing; it then reopens *half-open*, with one slot
that grows with each round of successes. A ``DomainPolicyAlerted`` event opens it too
(:meth:`FlowControl.open_for`, fed by :mod:`services.dispatcher.domain_alerts`). Every
domain has its own state: one domain's slow-down never changes another's slots.
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
# A claimed job may wait prefetch x pace for its slot: 500 x 1.5 s, within its 900 s lease.
MAX_PACE_S = 1.5
BACKOFF_S = 1.0  # a burst of "slow down" replies halves a domain's concurrency once
_BUCKET_S = 1.0  # replies are counted per second for the breaker's throttle share


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


class AdaptiveLimit:
    """A semaphore whose size (``limit``) follows a window between ``floor`` and ``ceiling``.

    :meth:`end_round` applies one round's replies (additive increase, a cut by half the share
    of slow-downs); :meth:`cut` halves at once (the host asked); :meth:`restart` is half-open
    (one slot, below the floor on purpose: the breaker's probe).
    """

    def __init__(self, ceiling: int, *, floor: int = 1) -> None:
        self.ceiling = max(1, ceiling)
        self.floor = min(max(1, floor), self.ceiling)
        self.window = float(self.ceiling)
        self.limit = self.ceiling
        self.in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    def try_acquire(self) -> bool:
        """Take a free slot without waiting; False when none is free (then :meth:`acquire`)."""
        if self.in_use >= self.limit:
            return False
        self.in_use += 1
        return True

    async def acquire(self) -> None:
        while self.in_use >= self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # pass the wake-up on
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        self.in_use += 1

    def release(self) -> None:
        self.in_use -= 1
        self._wake()

    def cut(self) -> None:
        """Halve now (not below the floor)."""
        self._set(max(float(self.floor), self.window / 2))

    def restart(self) -> None:
        """Half-open: one slot, grown again by successes."""
        self._set(1.0)

    def end_round(self, *, replies: int, throttled: int) -> None:
        """One round of ``replies``, ``throttled`` of them "slow down"."""
        if replies <= 0:
            return
        share = throttled / replies
        window = self.window + (1.0 - share)  # one slot per round of successes
        if throttled:
            window = max(float(self.floor), window * (1.0 - share / 2))
        self._set(min(float(self.ceiling), window))

    def _set(self, window: float) -> None:
        self.window = window
        before, self.limit = self.limit, max(1, int(window))
        if self.limit > before:
            self._wake()

    def _wake(self) -> None:
        free = self.limit - self.in_use
        while free > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1


@dataclass
class DomainState:
    slots: AdaptiveLimit
    limiter: RateLimiter
    pace_s: float = 0.0  # adaptive pause between messages, raised by throttling replies
    next_at: float = 0.0
    incidents: deque[float] = field(default_factory=deque)  # policy refusals
    # per second of the window: [start, replies, throttling replies]
    replies: deque[list[float]] = field(default_factory=deque)
    throttled: int = 0  # throttling replies within the window
    answered: int = 0  # replies within the window
    last_cut: float = float("-inf")
    open_until: float = 0.0
    round_replies: int = 0  # replies of the round under way (a round: ``slots.limit`` replies)
    round_throttled: int = 0


class FlowControl:
    """Decides when a message to a domain may go, and learns from the replies."""

    def __init__(
        self,
        *,
        global_rate: float = 0.0,
        domain_concurrency: int = 16,
        domain_concurrency_floor: int = 2,
        domain_rate: float = 0.0,
        breaker_threshold: int = 20,
        breaker_window_s: float = 30.0,
        breaker_cooldown_s: float = 60.0,
        breaker_throttle_ratio: float = 0.5,
        clock: Clock = time.monotonic,
    ) -> None:
        self._global = RateLimiter(global_rate, clock=clock)
        self._domain_concurrency = domain_concurrency
        self._floor = domain_concurrency_floor
        self._domain_rate = domain_rate
        self._threshold = breaker_threshold
        self._window = breaker_window_s
        self._cooldown = breaker_cooldown_s
        self._throttle_ratio = breaker_throttle_ratio
        self._clock = clock
        self._domains: dict[str, DomainState] = {}

    def _state(self, domain: str) -> DomainState:
        state = self._domains.get(domain)
        if state is None:
            state = DomainState(
                slots=AdaptiveLimit(self._domain_concurrency, floor=self._floor),
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
        state.slots.restart()
        return True

    def pace(self, domain: str) -> float:
        state = self._domains.get(domain)
        return state.pace_s if state else 0.0

    def concurrency(self, domain: str) -> int:
        """How many SMTP transactions the domain may have in flight now."""
        state = self._domains.get(domain)
        return state.slots.limit if state else self._domain_concurrency

    @asynccontextmanager
    async def slot(self, domain: str) -> AsyncIterator[None]:
        """Wait for the global rate, the domain's concurrency, rate and pace; then send."""
        state = self._state(domain)
        if self._global.rate > 0:  # unlimited (the default): not even a coroutine per message
            await self._global.acquire()
        if not state.slots.try_acquire():
            await state.slots.acquire()
        try:
            if state.limiter.rate > 0:
                await state.limiter.acquire()
            if state.pace_s > 0:
                now = self._clock()
                start = max(state.next_at, now)
                state.next_at = start + state.pace_s
                if start > now:
                    await asyncio.sleep(start - now)
            yield
        finally:
            state.slots.release()

    def record(self, domain: str, outcome: Outcome) -> bool:
        """Learn from one outcome; True if this outcome opened the breaker."""
        state = self._state(domain)
        now = self._clock()
        if outcome.host_throttle:
            state.pace_s = min(MAX_PACE_S, max(MIN_PACE_S, state.pace_s * 2))
            if now - state.last_cut >= BACKOFF_S:
                state.slots.cut()
                state.last_cut = now
                state.round_replies = state.round_throttled = 0
        else:
            self._count_round(state, throttled=outcome.throttle)
            if outcome.status == "sent" and state.pace_s > 0:
                state.pace_s = 0.0 if state.pace_s <= MIN_PACE_S else state.pace_s * 0.8
        self._count_reply(state, now, throttled=outcome.throttle)
        if outcome.policy:
            state.incidents.append(now)
        while state.incidents and state.incidents[0] < now - self._window:
            state.incidents.popleft()
        if now < state.open_until or not (outcome.throttle or outcome.policy):
            return False
        storm = len(state.incidents) >= self._threshold
        swamped = (
            state.throttled >= self._threshold
            and state.throttled >= self._throttle_ratio * state.answered
        )
        if not (storm or swamped):
            return False
        state.open_until = now + self._cooldown
        state.incidents.clear()
        state.replies.clear()
        state.throttled = state.answered = 0
        state.slots.restart()
        return True

    @staticmethod
    def _count_round(state: DomainState, *, throttled: bool) -> None:
        """Count one recipient-scoped reply; at the end of a round, move the window."""
        state.round_replies += 1
        state.round_throttled += int(throttled)
        if state.round_replies < state.slots.limit:
            return
        replies, slowed = state.round_replies, state.round_throttled
        state.round_replies = state.round_throttled = 0
        at_floor = state.slots.limit <= state.slots.floor
        state.slots.end_round(replies=replies, throttled=slowed)
        if at_floor and 2 * slowed >= replies:
            # Still told to slow down at the lowest concurrency: space the messages out.
            state.pace_s = min(MAX_PACE_S, max(MIN_PACE_S, state.pace_s * 2))

    def _count_reply(self, state: DomainState, now: float, *, throttled: bool) -> None:
        replies = state.replies
        if not replies or now - replies[-1][0] >= _BUCKET_S:
            replies.append([now, 0, 0])
        bucket = replies[-1]
        bucket[1] += 1
        state.answered += 1
        if throttled:
            bucket[2] += 1
            state.throttled += 1
        while replies and replies[0][0] < now - self._window:
            _, answered, throttles = replies.popleft()
            state.answered -= int(answered)
            state.throttled -= int(throttles)
