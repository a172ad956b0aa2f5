"""Soft-bounce scoring and policy storms, as pure rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.subscription.feedback.policy import (
    FeedbackPolicy,
    is_storm,
    next_soft_score,
    soft_suppresses,
)
from services.subscription.feedback.settings import load_feedback_policy

POLICY = FeedbackPolicy(soft_threshold=3, soft_stale_after=timedelta(days=21), storm_threshold=5)
T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def test_first_soft_bounce_scores_one() -> None:
    result = next_soft_score(policy=POLICY, score=None, last_bounce_at=None, now=T0)
    assert (result.score, result.counted) == (1.0, True)


def test_score_rises_at_most_once_a_day() -> None:
    same_day = next_soft_score(
        policy=POLICY, score=1.0, last_bounce_at=T0, now=T0 + timedelta(hours=5)
    )
    next_day = next_soft_score(
        policy=POLICY, score=1.0, last_bounce_at=T0, now=T0 + timedelta(days=1)
    )
    assert (same_day.score, same_day.counted) == (1.0, False)
    assert (next_day.score, next_day.counted) == (2.0, True)


def test_stale_score_decays_to_a_fresh_start() -> None:
    result = next_soft_score(
        policy=POLICY, score=2.0, last_bounce_at=T0, now=T0 + timedelta(days=30)
    )
    assert (result.score, result.decayed) == (1.0, True)


def test_threshold_suppresses_and_storms_need_the_threshold() -> None:
    assert not soft_suppresses(policy=POLICY, score=2.0)
    assert soft_suppresses(policy=POLICY, score=3.0)
    assert not is_storm(policy=POLICY, policy_bounces_in_window=4)
    assert is_storm(policy=POLICY, policy_bounces_in_window=5)


def test_thresholds_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_FEEDBACK_STORM_THRESHOLD", "5000")
    monkeypatch.setenv("NEWSLETTER_FEEDBACK_SOFT_THRESHOLD", "5")
    policy = load_feedback_policy()
    assert (policy.storm_threshold, policy.soft_threshold) == (5000, 5.0)
