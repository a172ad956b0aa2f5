"""The suite's services as OS processes on one moved clock, for the schedule tests (issue 17).

Each process is started as ``newsletter demo`` and deploy start them (``python -m
services.<name>``, :class:`newsletter_cli.processes.ServiceProcess`), with the test's settings in
its environment and JSON logs in a file of its own. The dispatchers read their time from one
clock file (``NEWSLETTER_DISPATCH_CLOCK_FILE``): :meth:`Suite.set_clock` moves every
dispatcher's time at once, and it flows on from there as on the machine.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import datetime
from pathlib import Path

import httpx

from newsletter_cli.processes import ServiceFailed, ServiceProcess
from shared.clock import OffsetFileClock, write_clock_offset
from tests.support.dispatch_seed import log_events, settings_env
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
PASSES = "newsletter_scheduler_passes_total"


class Suite:
    """``dispatchers`` dispatcher processes (and a renderer, if asked) on the given settings."""

    def __init__(
        self, settings: object, *, log_dir: Path, dispatchers: int = 2, renderer: bool = False
    ) -> None:
        self.clock_file = log_dir / "clock"
        self.clock = OffsetFileClock(self.clock_file)  # what every dispatcher reads
        settings = settings.model_copy(update={"dispatch_clock_file": self.clock_file})  # type: ignore[attr-defined]
        env = settings_env(settings)
        self.dispatchers = [
            _process(f"dispatcher-{n}", "dispatcher", dict(env), log_dir)
            for n in range(dispatchers)
        ]
        self.renderer = (
            _process("renderer", "renderer", {**env, "NEWSLETTER_PREFLIGHT_SPAM": "false"}, log_dir)
            if renderer
            else None
        )
        self.env = env

    @property
    def processes(self) -> list[ServiceProcess]:
        return [*([self.renderer] if self.renderer else []), *self.dispatchers]

    def set_clock(self, now: datetime) -> None:
        """Every dispatcher reads ``now`` from this moment on (and time flows on)."""
        write_clock_offset(self.clock_file, now=now)

    async def start(self, *, timeout: float = 120.0) -> None:
        """Start every process; return once each answers its probe and every dispatcher's
        scheduler has looked for due sends."""
        await asyncio.gather(*(_start(p, timeout=timeout) for p in self.processes))
        await self.scheduler_passes_after(1, timeout=timeout)

    def kill(self) -> None:
        """``kill -9`` every process: no clean-up, no last commit, no goodbye to the broker."""
        for process in self.processes:
            assert process.process is not None
            os.kill(process.process.pid, signal.SIGKILL)
        for process in self.processes:
            assert process.process is not None
            process.process.wait(30)

    def stop(self) -> list[int | None]:
        """SIGTERM every process still running; their exit codes."""
        return [process.stop(timeout=30) for process in self.processes]

    async def scheduler_passes(self) -> list[float]:
        async with httpx.AsyncClient(timeout=5.0) as client:
            return [await _passes(client, process) for process in self.dispatchers]

    async def scheduler_passes_after(self, count: int, *, timeout: float = 60.0) -> None:
        """Until every dispatcher's scheduler has looked ``count`` more times."""
        start = await self.scheduler_passes()
        deadline = time.monotonic() + timeout
        while True:
            now = await self.scheduler_passes()
            if all(b >= a + count for a, b in zip(start, now, strict=True)):
                return
            for process in self.dispatchers:
                assert process.process is not None
                if process.process.poll() is not None:
                    raise AssertionError(f"{process.name} exited; see {process.log_path}")
            if time.monotonic() > deadline:
                raise AssertionError(f"scheduler passes {start} -> {now} in {timeout}s")
            await asyncio.sleep(0.1)

    def log_events(self, event: str) -> int:
        """How many lines of every dispatcher log (all runs) are the event ``event``."""
        return sum(log_events(p.log_path, event) for p in self.dispatchers)

    def logs_tail(self, chars: int = 3000) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.log_path.read_text(errors='replace')[-chars:]}"
            for p in self.processes
            if p.log_path.exists()
        )


def _process(name: str, service: str, env: dict[str, str], log_dir: Path) -> ServiceProcess:
    return ServiceProcess(
        name=name,
        args=["-m", f"services.{service}"],
        ready_url="",  # on its start: a probe port drawn then
        log_path=log_dir / f"{name}.log",
        env=env,
    )


async def _start(process: ServiceProcess, *, timeout: float, attempts: int = 3) -> None:
    """Start ``process`` on a probe port drawn now; again on another one if it exits while
    starting (another test run on the machine bound the port in between)."""
    renderer = process.args[-1] == "services.renderer"
    variable = f"NEWSLETTER_{'RENDERER' if renderer else 'DISPATCHER'}_PROBE_PORT"
    for attempt in range(attempts):
        port = free_port()
        process.env[variable] = str(port)
        process.ready_url = f"http://127.0.0.1:{port}/{'readyz' if renderer else 'healthz'}"
        process.start()
        try:
            await process.wait_ready(timeout=timeout)
            return
        except ServiceFailed:
            if attempt == attempts - 1 or process.process is None or process.process.poll() is None:
                raise


async def _passes(client: httpx.AsyncClient, process: ServiceProcess) -> float:
    metrics = process.ready_url.rsplit("/", 1)[0] + "/metrics"
    try:
        body = (await client.get(metrics)).text
    except httpx.HTTPError:
        return 0.0
    for line in body.splitlines():
        if line.startswith(PASSES + " "):
            return float(line.split()[1])
    return 0.0
