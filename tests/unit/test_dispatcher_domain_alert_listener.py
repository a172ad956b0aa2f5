"""The alert listener applies each ``DomainPolicyAlerted`` once per process, whatever the clocks."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.dispatcher.domain_alerts import DomainAlertListener
from services.dispatcher.flow import FlowControl
from shared.messaging.schemas import DomainPolicyAlerted

START = 1_000_000.0


class Clocks:
    """A wall clock and a monotonic clock that drift apart, as real ones do by microseconds."""

    def __init__(self) -> None:
        self.wall = START
        self.monotonic = 50.0

    def step(self, wall: float, monotonic: float) -> None:
        self.wall += wall
        self.monotonic += monotonic


def alert(pause_s: float = 15, **fields: object) -> DomainPolicyAlerted:
    return DomainPolicyAlerted(
        domain="Paused.Example",
        policy_bounces=5,
        window_s=60,
        threshold=5,
        pause_s=pause_s,
        created_at=datetime.fromtimestamp(START, UTC),
        **fields,
    )


def listener(clocks: Clocks) -> tuple[DomainAlertListener, FlowControl]:
    flow = FlowControl(clock=lambda: clocks.monotonic)
    return DomainAlertListener(flow=flow, wall_clock=lambda: clocks.wall), flow


def test_the_same_alert_through_both_queues_is_applied_once_though_the_clocks_drift() -> None:
    clocks = Clocks()
    alerts, flow = listener(clocks)
    first = alert()
    assert alerts.apply(first)
    # The monotonic clock ran a little faster than the wall clock: comparing deadlines alone
    # would read the second copy as a longer pause and open the breaker twice.
    clocks.step(wall=1.0, monotonic=1.001)
    assert not alerts.apply(first.model_copy())
    assert flow.open_remaining("paused.example") == pytest.approx(15 - 1.001), "the first pause"


def test_another_alert_for_the_domain_still_extends_its_pause() -> None:
    clocks = Clocks()
    alerts, flow = listener(clocks)
    assert alerts.apply(alert(pause_s=15))
    clocks.step(wall=5, monotonic=5)
    assert alerts.apply(alert(pause_s=60))
    assert flow.open_remaining("paused.example") == pytest.approx(55.0)


def test_an_expired_alert_is_ignored_and_remembered_ids_are_dropped_when_their_pause_ends() -> None:
    clocks = Clocks()
    alerts, flow = listener(clocks)
    old = alert(pause_s=10)
    assert alerts.apply(old)
    clocks.step(wall=11, monotonic=11)
    assert not alerts.apply(old), "its pause ended"
    assert not flow.is_open("paused.example")
    assert alerts.apply(alert(pause_s=30)), "a new alert opens it again"
    assert len(alerts._applied) == 1, "the ended alert's id was forgotten"
