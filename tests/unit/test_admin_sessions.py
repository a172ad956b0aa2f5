"""Ops-page sessions and the login throttle, with an injected clock (pure logic)."""

from __future__ import annotations

from services.subscription.admin_sessions import AdminSessions
from shared.rate_limit import SlidingWindowLimiter
from tests.support.stepped_clock import SteppedClock


def test_blocked_reports_the_limit_without_recording_an_attempt() -> None:
    clock = SteppedClock()
    limiter = SlidingWindowLimiter(limit=2, window_s=60, clock=clock)
    assert not limiter.blocked("a")
    assert limiter.allow("a")
    assert not limiter.blocked("a")
    assert limiter.allow("a")
    assert limiter.blocked("a")
    assert limiter.blocked("a"), "asking twice records nothing"
    assert not limiter.blocked("b")
    clock.now += 61
    assert not limiter.blocked("a"), "the window has passed"


def test_sessions_are_opaque_distinct_and_revocable() -> None:
    sessions = AdminSessions(secret_key="k" * 40)
    first, second = sessions.open(), sessions.open()
    assert first != second
    assert "k" * 40 not in first
    assert sessions.valid(first)
    assert sessions.valid(second)
    sessions.revoke(first)
    assert not sessions.valid(first)
    assert sessions.valid(second), "logging out ends only that session"
    assert not sessions.valid("")
    assert not sessions.valid(first.replace(".", "-"))
    assert not AdminSessions(secret_key="other" * 8).valid(second)
