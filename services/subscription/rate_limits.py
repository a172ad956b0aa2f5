"""Per-client-IP rate limit of the signup and resend forms, kept in process memory.

Why memory and not the database: the per-IP limit is a coarse brake on one noisy client; with
N replicas behind a balancer a client gets at most N times the limit, which still stops a flood,
and a database write per request would cost more than the requests it refuses. The limit that
must hold exactly across replicas, one confirmation mail per address per hour, lives in the
database instead (``Subscriber.last_confirmation_sent_at``, claimed by a conditional UPDATE in
``signup.py``).

Memory is bounded: at most ``max_keys`` clients are tracked; the oldest are forgotten first.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable


class SlidingWindowLimiter:
    def __init__(
        self,
        *,
        limit: int,
        window_s: float,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit = limit
        self._window = window_s
        self._max_keys = max_keys
        self._clock = clock
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()

    def allow(self, key: str) -> bool:
        """Record one attempt by ``key``; False if it is over the limit (not recorded then)."""
        if self._limit <= 0:
            return True
        now = self._clock()
        hits = self._hits.get(key)
        if hits is None:
            hits = deque()
            self._hits[key] = hits
            while len(self._hits) > self._max_keys:
                self._hits.popitem(last=False)
        else:
            self._hits.move_to_end(key)
        while hits and hits[0] <= now - self._window:
            hits.popleft()
        if len(hits) >= self._limit:
            return False
        hits.append(now)
        return True

    def blocked(self, key: str) -> bool:
        """Whether ``key`` is at the limit now (nothing is recorded)."""
        hits = self._hits.get(key)
        if hits is None or self._limit <= 0:
            return False
        cutoff = self._clock() - self._window
        return sum(1 for hit in hits if hit > cutoff) >= self._limit

    def retry_after_s(self, key: str) -> int:
        hits = self._hits.get(key)
        if not hits:
            return 0
        return max(1, int(hits[0] + self._window - self._clock()) + 1)
