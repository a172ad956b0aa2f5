"""The wrong-token budget of the admin APIs (shared/token_budget.py), on a stepped clock."""

from __future__ import annotations

from shared.token_budget import TokenCheck, WrongTokenBudget, same_secret
from tests.support.stepped_clock import SteppedClock

RIGHT = "r" * 40


def test_a_client_past_its_budget_is_held_even_with_the_right_token() -> None:
    clock = SteppedClock()
    budget = WrongTokenBudget(limit=2, window_s=60.0, clock=clock)
    assert budget.check("a", RIGHT, RIGHT) is TokenCheck.ACCEPTED
    assert budget.check("a", "guess", RIGHT) is TokenCheck.WRONG
    assert budget.check("a", RIGHT, RIGHT) is TokenCheck.ACCEPTED, "one wrong is within budget"
    assert budget.check("a", "guess", RIGHT) is TokenCheck.WRONG
    assert budget.check("a", RIGHT, RIGHT) is TokenCheck.THROTTLED
    assert budget.check("b", RIGHT, RIGHT) is TokenCheck.ACCEPTED, "per client"
    assert 1 <= budget.retry_after_s("a") <= 61
    clock.now += 60.5
    assert budget.check("a", RIGHT, RIGHT) is TokenCheck.ACCEPTED, "the window has passed"


def test_throttled_checks_do_not_extend_the_hold() -> None:
    clock = SteppedClock()
    budget = WrongTokenBudget(limit=1, window_s=60.0, clock=clock)
    assert budget.check("a", "guess", RIGHT) is TokenCheck.WRONG
    for _ in range(50):
        clock.now += 1.0
        assert budget.check("a", "another guess", RIGHT) is TokenCheck.THROTTLED
    clock.now += 10.5
    assert budget.check("a", RIGHT, RIGHT) is TokenCheck.ACCEPTED


def test_no_limit_and_no_configured_token() -> None:
    unlimited = WrongTokenBudget(limit=0)
    for _ in range(100):
        assert unlimited.check("a", "guess", RIGHT) is TokenCheck.WRONG
    assert unlimited.check("a", RIGHT, RIGHT) is TokenCheck.ACCEPTED
    assert WrongTokenBudget(limit=5).check("a", "", "") is TokenCheck.WRONG, "no token set"
    assert same_secret("жэтон", "жэтон")
    assert not same_secret("жэтон", "жэтоН")
