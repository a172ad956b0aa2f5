"""The editor login's throttle: wrong tokens per client within a sliding window."""

from __future__ import annotations

from services.renderer.editor_pages import LoginFailures


def test_a_client_is_blocked_after_the_allowed_failures_until_the_window_passes() -> None:
    now = [0.0]
    failures = LoginFailures(allowed=3, window_s=60.0, clock=lambda: now[0])
    for _ in range(3):
        assert not failures.blocked("10.0.0.1")
        failures.add("10.0.0.1")
        now[0] += 1.0
    assert failures.blocked("10.0.0.1")
    assert not failures.blocked("10.0.0.2"), "other clients are not affected"
    now[0] += 58.5  # the first failure is now older than the window
    assert not failures.blocked("10.0.0.1")
