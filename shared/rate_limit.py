"""The suite's one rate limiter: attempts per key within a sliding window, in process memory.

Every limit of the suite is this class: the signup and resend forms per client IP
(subscription), wrong tokens at the ops page and editor logins per client (subscription and
renderer), and bounce reports per source (bounce receiver).

- :meth:`SlidingWindowLimiter.allow` records an attempt if it fits and says whether it did
  (the form limits); :meth:`~SlidingWindowLimiter.would_allow` and
  :meth:`~SlidingWindowLimiter.record` are the two halves, for limits that are checked
  before the work and charged after it (a login charges only a wrong token; the bounce
  receiver charges two budgets only when both allow).
- An attempt may cost more than one unit (a webhook batch of many events). A cost above the
  limit is charged as the whole limit: a batch bigger than the budget passes when the window
  is empty (and fills it) instead of being refused on every retry for ever.
- A hit leaves the window ``window_s`` seconds after it was made.
- Memory is bounded: at most ``max_keys`` keys are tracked; the least recently seen are
  forgotten first. ``limit <= 0`` disables the limiter.
- Time comes from the injected ``clock`` (``time.monotonic`` by default), so tests step it.
- The limits on people's clients (signups, logins, admin tokens) key a client by
  :func:`client_key`: an IPv4 address, or the /64 network of an IPv6 one (a host picks any
  address in its /64). The bounce intake keys mail servers by their exact address instead:
  a provider's many MTAs share its networks.

Why memory and not the database: these limits are coarse brakes on one noisy client; with N
replicas a client gets at most N times the limit, which still stops a flood, and a write per
request would cost more than the requests it refuses. Limits that must hold exactly across
replicas (one confirmation mail per address per hour) live in the database instead.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from starlette.requests import HTTPConnection

IPV6_CLIENT_PREFIX = 64
# RFC 6052's well-known prefix: an IPv4 client translated into IPv6 (NAT64, SIIT) carries its
# IPv4 address in the last 32 bits; keyed by /64, every such client would be one key.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def client_key(host: str | None) -> str:
    """The key a client's requests are limited under.

    An IPv6 client is keyed by its /64: RFC 4291 gives interface identifiers 64 bits, so
    one machine can rotate through 2**64 addresses of its subnet (privacy addresses, RFC
    8981, change on their own) and a per-address limit would not hold it at all. An end site
    usually holds a /56 or /48 (RFC 6177), so a whole site still has 256 or more keys: this
    bounds one host, not one customer. An IPv4-mapped address (``::ffff:a.b.c.d``) and one
    under NAT64's well-known prefix (``64:ff9b::a.b.c.d``, RFC 6052) are their IPv4 address;
    a host that is not an IP address (a test client, a Unix socket) is its own key.
    """
    if not host:
        return "unknown"
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])  # drop an IPv6 zone (fe80::1%eth0)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        if ip in _NAT64:
            return str(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        return str(ipaddress.IPv6Network((ip, IPV6_CLIENT_PREFIX), strict=False))
    return str(ip)


def request_client_key(request: HTTPConnection) -> str:
    """:func:`client_key` of a request's peer (as uvicorn saw it, after any trusted proxy)."""
    return client_key(request.client.host if request.client else None)


class SlidingWindowLimiter:
    """At most ``limit`` units per key within any ``window_s`` seconds."""

    def __init__(
        self,
        *,
        limit: int,
        window_s: float,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, not {window_s}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, not {max_keys}")
        self.limit = limit
        self.window_s = window_s
        self._max_keys = max_keys
        self._clock = clock
        self._hits: OrderedDict[str, deque[tuple[float, int]]] = OrderedDict()

    def _cost(self, cost: int) -> int:
        return min(max(cost, 1), self.limit)

    def _current(self, key: str, now: float) -> deque[tuple[float, int]] | None:
        """The key's hits still in the window (expired ones dropped); marks the key as seen."""
        hits = self._hits.get(key)
        if hits is None:
            return None
        self._hits.move_to_end(key)
        cutoff = now - self.window_s
        while hits and hits[0][0] <= cutoff:
            hits.popleft()
        return hits

    def used(self, key: str) -> int:
        """Units ``key`` has spent within the window now."""
        hits = self._current(key, self._clock())
        return sum(cost for _, cost in hits) if hits else 0

    def would_allow(self, key: str, cost: int = 1) -> bool:
        """Whether ``cost`` more units from ``key`` fit now (records nothing)."""
        if self.limit <= 0:
            return True
        return self.used(key) + self._cost(cost) <= self.limit

    def blocked(self, key: str) -> bool:
        """Whether ``key`` has used its whole budget (one more attempt would be refused)."""
        return not self.would_allow(key)

    def record(self, key: str, cost: int = 1) -> None:
        """Charge ``cost`` units to ``key``, whether or not they fit (e.g. a wrong token)."""
        if self.limit <= 0:
            return
        now = self._clock()
        hits = self._current(key, now)
        if hits is None:
            hits = self._hits[key] = deque()
            while len(self._hits) > self._max_keys:
                self._hits.popitem(last=False)
        hits.append((now, self._cost(cost)))

    def allow(self, key: str, cost: int = 1) -> bool:
        """Record the attempt if it fits; False (and nothing recorded) if it does not."""
        if not self.would_allow(key, cost):
            return False
        self.record(key, cost)
        return True

    def retry_after_s(self, key: str) -> int:
        """Whole seconds until the oldest hit of ``key`` leaves the window (0: nothing held)."""
        hits = self._current(key, self._clock())
        if not hits:
            return 0
        return max(1, math.floor(hits[0][0] + self.window_s - self._clock()) + 1)
