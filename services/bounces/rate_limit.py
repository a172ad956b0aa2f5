"""Reports per minute per source: a client IP and a provider each get a budget.

A request costs one unit per event it carries (at least one), so a batch of a thousand events
counts as a thousand reports; but never more than a whole minute's budget, so a provider's
batch bigger than the budget passes when the window is empty (and fills it) instead of being
refused on every retry until the provider drops it. Kept in memory per process (one receiver
per deployment takes webhooks); the clock is injected for tests. Services never import each
other, so this is the bounce receiver's own small limiter rather than the subscription
service's.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable

WINDOW_S = 60.0


class ReportBudget:
    def __init__(
        self,
        *,
        per_minute: int,
        max_keys: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit = per_minute
        self._max_keys = max_keys
        self._clock = clock
        self._spent: OrderedDict[str, deque[tuple[float, int]]] = OrderedDict()

    def _used(self, key: str, now: float) -> deque[tuple[float, int]]:
        spent = self._spent.get(key)
        if spent is None:
            spent = self._spent[key] = deque()
            while len(self._spent) > self._max_keys:
                self._spent.popitem(last=False)
        else:
            self._spent.move_to_end(key)
        while spent and spent[0][0] <= now - WINDOW_S:
            spent.popleft()
        return spent

    def allows(self, key: str, cost: int = 1) -> bool:
        """Would ``cost`` more reports from ``key`` stay within the budget? (records nothing)"""
        if self._limit <= 0:
            return True
        spent = self._used(key, self._clock())
        return sum(c for _, c in spent) + self._cost(cost) <= self._limit

    def _cost(self, cost: int) -> int:
        return min(max(cost, 1), self._limit)

    def spend(self, key: str, cost: int = 1) -> None:
        if self._limit > 0:
            now = self._clock()
            self._used(key, now).append((now, self._cost(cost)))
