"""The editor login's throttle: wrong tokens per client within a sliding window."""

from __future__ import annotations

from services.renderer.editor_pages import LOGIN_FAILURES_ALLOWED, login_throttle


def test_a_client_is_blocked_after_the_allowed_failures_until_the_window_passes() -> None:
    now = [0.0]
    failures = login_throttle(clock=lambda: now[0])
    for _ in range(LOGIN_FAILURES_ALLOWED):
        assert not failures.blocked("10.0.0.1")
        failures.record("10.0.0.1")
        now[0] += 1.0
    assert failures.blocked("10.0.0.1")
    assert not failures.blocked("10.0.0.2"), "other clients are not affected"
    now[0] += 300.0 - LOGIN_FAILURES_ALLOWED + 0.5  # the first failure left the window
    assert not failures.blocked("10.0.0.1")
