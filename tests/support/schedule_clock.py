"""Dispatchers on a fake clock, run in the test's loop, and waits on what their schedulers did."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry

from shared.clock import Clock


class ClockedDispatcher:
    """``services.dispatcher.service.run`` with a clock of the test's and a registry of its own
    (its scheduler's passes are counted there)."""

    def __init__(self, settings: object, *, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.registry = CollectorRegistry()
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def scheduler_passes(self) -> float:
        return self.registry.get_sample_value("newsletter_scheduler_passes_total") or 0.0

    def reconcile_passes(self) -> float:
        return self.registry.get_sample_value("newsletter_reconcile_passes_total") or 0.0

    async def reconciled_after(self, count: int = 2) -> None:
        """Wait until this dispatcher's reconciler has gone over the ledger ``count`` more
        times (due retries taken, lost jobs re-driven, their relay done)."""
        start = self.reconcile_passes()
        await wait_until(
            lambda: _true(self.reconcile_passes() >= start + count), "reconciler passes"
        )

    async def __aenter__(self) -> ClockedDispatcher:
        from services.dispatcher import service

        self.task = asyncio.create_task(
            service.run(
                self.settings,  # type: ignore[arg-type]
                stop=self.stop,
                serve_probes=False,
                registry=self.registry,
                clock=self.clock,
            )
        )
        await wait_until(lambda: _true(self.scheduler_passes() >= 1), "scheduler started")
        if self.task.done():
            self.task.result()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 30)

    async def passes_after(self, count: int = 2) -> None:
        """Wait until this dispatcher's scheduler has looked ``count`` more times."""
        start = self.scheduler_passes()
        await wait_until(
            lambda: _true(self.scheduler_passes() >= start + count), "scheduler passes"
        )


async def _true(value: bool) -> bool:
    return value


async def wait_until(
    condition: Callable[[], Awaitable[bool]], what: str, *, timeout: float = 60.0
) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)
