"""Group many small awaits into one database round trip.

Each caller awaits its own result; a background task takes whatever has arrived (up to
``max_size`` items, waiting at most ``interval_s`` for more) and hands it to the handler in one
call. An error of the handler is raised in every caller of that batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    def __init__(
        self,
        handler: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
        *,
        max_size: int = 200,
        interval_s: float = 0.02,
    ) -> None:
        self._handler = handler
        self._max = max_size
        self._interval = interval_s
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]] | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future))
        return await future

    async def _loop(self) -> None:
        while True:
            first = await self._queue.get()
            if first is None:
                return
            if self._queue.qsize() < self._max:
                await asyncio.sleep(self._interval)  # let the batch fill
            batch = [first]
            stop = False
            while len(batch) < self._max and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stop = True
                    break
                batch.append(item)
            await self._run(batch)
            if stop:
                await self._drain()
                return

    async def _drain(self) -> None:
        rest: list[tuple[T, asyncio.Future[R]]] = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                rest.append(item)
        if rest:
            await self._run(rest)

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._handler([item for item, _ in batch])
        except Exception as err:
            for _, future in batch:
                if not future.done():
                    future.set_exception(err)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def close(self) -> None:
        """Flush what is waiting, then stop."""
        if self._task is None:
            return
        self._queue.put_nowait(None)
        await self._task
        self._task = None
