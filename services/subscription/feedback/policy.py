"""The rules of deciding on a bounce, as pure functions (no database, no clock of their own).

- ``hard``: suppress at once. ``complaint``: unsubscribe and suppress at once.
- ``soft``: a Mailman-style score: +1 at most once per day, reset when the last bounce is
  older than ``stale_after`` (the condition went away), suppress when it reaches ``threshold``.
- ``policy``: never suppress; count per receiving domain and raise a storm alert when a domain
  reaches ``storm_threshold`` policy bounces within ``storm_window``.
- ``delayed``, ``auto-reply``, ``unknown``: record only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class FeedbackPolicy:
    soft_threshold: float = 3.0
    soft_increment: float = 1.0
    soft_min_interval: timedelta = timedelta(days=1)
    soft_stale_after: timedelta = timedelta(days=21)  # weekly issues: three missed in a row
    storm_threshold: int = 50
    storm_window: timedelta = timedelta(hours=1)
    storm_pause: timedelta = timedelta(hours=1)


@dataclass(frozen=True)
class SoftScore:
    score: float
    counted: bool  # False when this bounce came within the same day as the last counted one
    decayed: bool  # True when an old score was reset first


def next_soft_score(
    *, policy: FeedbackPolicy, score: float | None, last_bounce_at: datetime | None, now: datetime
) -> SoftScore:
    """The score after one more soft bounce at ``now``."""
    if score is None or last_bounce_at is None:
        return SoftScore(policy.soft_increment, counted=True, decayed=False)
    if now - last_bounce_at > policy.soft_stale_after:
        return SoftScore(policy.soft_increment, counted=True, decayed=True)
    if now - last_bounce_at < policy.soft_min_interval:
        return SoftScore(score, counted=False, decayed=False)
    return SoftScore(score + policy.soft_increment, counted=True, decayed=False)


def soft_suppresses(*, policy: FeedbackPolicy, score: float) -> bool:
    return score >= policy.soft_threshold


def is_storm(*, policy: FeedbackPolicy, policy_bounces_in_window: int) -> bool:
    return policy_bounces_in_window >= policy.storm_threshold
