"""``newsletter bench capacity`` measures what it claims: CPU time of real processes, by group.

The sampler is checked against processes whose CPU use is known (one burns a known amount,
one sleeps), against a PostgreSQL backend found through ``pg_stat_activity``, and the whole
benchmark once at a small N on its own RabbitMQ node and PostgreSQL server. CPU figures are
bounded from below by what was burnt, never compared with wall-clock windows.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import asyncpg
import pytest

from benchmarks import capacity, scratch
from benchmarks.cpu_sampler import CpuSampler, PidSource

BURN_S = 0.4
_BURNER = f"""
import sys, time
print("ready", flush=True)
if sys.argv[1] == "burn":
    sys.stdin.readline()
    start = time.process_time()
    while time.process_time() - start < {BURN_S}:
        pass
    print("done", flush=True)
sys.stdin.readline()
"""


def _start(mode: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", _BURNER, mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return process


def _pids(pid: int) -> PidSource:
    async def source() -> set[int]:
        return {pid}

    return source


async def test_the_sampler_counts_the_cpu_a_process_burnt_after_begin_and_not_an_idle_one() -> None:
    busy, idle = _start("burn"), _start("idle")
    try:
        sampler = CpuSampler({"busy": _pids(busy.pid), "idle": _pids(idle.pid)})
        await sampler.begin()  # after both start-ups: their import CPU is not counted
        assert busy.stdin is not None
        assert busy.stdout is not None
        busy.stdin.write("go\n")
        busy.stdin.flush()
        assert await asyncio.to_thread(busy.stdout.readline) == "done\n"
        seconds = await sampler.end()
    finally:
        for process in (busy, idle):
            process.kill()
            process.wait(10)
    assert BURN_S * 0.9 <= seconds["busy"] < BURN_S + 1.0, seconds
    assert seconds["idle"] < 0.05, f"an idle process was counted {seconds['idle']} s of CPU"
    assert sampler.members() == {"busy": 1, "idle": 1}


async def test_the_backends_of_one_database_are_found_and_the_monitor_left_out() -> None:
    async with scratch.named_database(prefix="nlcaptest") as (name, url):
        monitor = await asyncpg.connect(url)
        worker = await asyncpg.connect(url)
        try:
            sampler = CpuSampler({"backends": capacity.backends_of(monitor, name)})
            await sampler.begin()
            await worker.fetchval("SELECT count(*) FROM generate_series(1, 3000000)")
            seconds = await sampler.end()
            assert sampler.members() == {"backends": 1}, "only the worker's backend is counted"
            assert seconds["backends"] >= 0.05, f"the worker's query cost {seconds} s"
        finally:
            await worker.close()
            await monitor.close()


@pytest.mark.timeout(600)
async def test_a_small_capacity_run_measures_every_component_on_its_own_servers() -> None:
    figures = await capacity.run_capacity(recipients=300, variants=("unsigned",), queue_jobs=500)
    (run,) = figures["runs"]
    assert run["sink_received"] == 300
    for component in (
        "dispatcher",
        "rabbitmq",
        "postgres_backends",
        "postgres_server",
        "smtp_sink",
    ):
        assert run["cpu_seconds"][component] > 0, f"{component} was measured at 0 CPU: {run}"
    assert run["cpu_seconds"]["postgres_server"] >= run["cpu_seconds"]["postgres_backends"]
    assert run["wal_bytes"] > 0
    for component, ms in run["cpu_ms_per_msg_above_idle"].items():
        assert 0 <= ms <= run["cpu_ms_per_msg"][component], (component, run)
    assert run["tables"]["delivery"]["rows"] == 300
    assert run["rss_mb_peak"] > run["rss_mb_idle"] * 0.5 > 0
    for kind in ("classic", "quorum"):
        assert figures["queue_memory"][kind]["messages"] == 500, figures["queue_memory"]
    assert "unsigned |" in capacity.summary(figures)
    planned = capacity.model(figures)["unsigned"]
    assert planned["dispatcher_processes"] >= 1
    assert planned["postgres_bytes"]["delivery"] > 0
