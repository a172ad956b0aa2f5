"""A few hundred concurrent signups against the service in its own process: none lost, no
duplicates, one confirmation command per address (the load test's small version; figures
come from ``newsletter bench signups``, never from a timed assertion here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.signups import run_bench

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


async def test_concurrent_signups_lose_none_and_duplicate_none(
    postgres_url: str, tmp_path: Path
) -> None:
    report = await run_bench(
        count=300,
        database_url=postgres_url,
        concurrency=60,
        repeats=0.1,
        response_floor_s=0.0,
        var_dir=tmp_path,
    )
    assert report.problems == []
    assert report.stored == 300
    assert report.distinct == 300
    assert report.commands == 300
    assert report.statuses == {200: 330}
    # /healthz was probed on both ports during the load, and every probe was answered 200.
    assert report.liveness_s, "the health port was never probed"
    assert report.healthz_s, "the app's /healthz was never probed"
    assert report.probes_failed == 0


async def test_two_workers_lose_none_and_mail_each_address_once(
    postgres_url: str, tmp_path: Path
) -> None:
    """Two worker processes on one socket: repeats of an address land on either worker, and
    the database still stores it once and queues one confirmation command for it."""
    report = await run_bench(
        count=200,
        database_url=postgres_url,
        concurrency=60,
        repeats=0.2,
        response_floor_s=0.0,
        workers=2,
        var_dir=tmp_path,
    )
    assert report.workers == 2
    assert report.problems == []
    assert report.stored == 200
    assert report.distinct == 200
    assert report.commands == 200
    assert report.statuses == {200: 240}
