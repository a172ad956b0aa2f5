"""The per-IP limit split over ``serve --workers N``: together the workers never allow more."""

from __future__ import annotations

import pytest

from services.subscription.app import per_worker_ip_limit


@pytest.mark.parametrize(
    ("limit", "workers", "share"),
    [(30, 1, 30), (30, 2, 15), (30, 4, 7), (5, 5, 1), (0, 4, 0)],
)
def test_shares_add_up_to_at_most_the_limit(limit: int, workers: int, share: int) -> None:
    assert per_worker_ip_limit(limit, workers) == share
    assert per_worker_ip_limit(limit, workers) * workers <= limit


def test_a_limit_smaller_than_the_workers_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot be split over 4 workers"):
        per_worker_ip_limit(3, 4)
