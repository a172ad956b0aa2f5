"""The renderer service run in-process against the session's broker and database, and a way
to take just this test's messages off a queue (others' messages are returned untouched)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from services.renderer import service
from services.renderer.settings import RendererSettings, from_settings
from shared.messaging.topology import connect
from shared.settings import Settings
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "deploy" / "sample-issue"


def sample_sources(*languages: str) -> dict[str, str]:
    return {lang: (SAMPLE / f"{lang}.md").read_text(encoding="utf-8") for lang in languages}


@dataclass
class RunningRenderer:
    settings: RendererSettings
    connection: AbstractRobustConnection

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.renderer_probe_port}"

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=15.0)


@contextlib.asynccontextmanager
async def running_renderer(settings: Settings, tmp_path: Path) -> AsyncIterator[RunningRenderer]:
    config = from_settings(
        settings,
        renderer_probe_port=free_port(),
        issues_dir=ROOT / "deploy",
        var_dir=tmp_path,
        preflight_spam=False,  # SpamAssassin is tested on its own; here it only costs seconds
    )
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(config, stop=stop))
    connection = await connect(config.amqp_url)
    try:
        async with httpx.AsyncClient(timeout=2.0) as client:
            for _ in range(1200):  # 60 s: a loaded machine starts slowly
                if task.done():
                    task.result()
                with contextlib.suppress(httpx.HTTPError):
                    if (
                        await client.get(f"http://127.0.0.1:{config.renderer_probe_port}/readyz")
                    ).status_code == 200:
                        break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the renderer did not become ready")
        yield RunningRenderer(config, connection)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await connection.close()


async def take(
    connection: AbstractRobustConnection,
    queue_name: str,
    match: Callable[[AbstractIncomingMessage], bool],
    *,
    count: int = 1,
    timeout: float = 20.0,
) -> list[AbstractIncomingMessage]:
    """Ack and return the first ``count`` messages that ``match``; requeue every other one."""
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=200)
    queue = await channel.get_queue(queue_name, ensure=True)
    mine: list[AbstractIncomingMessage] = []
    others: list[AbstractIncomingMessage] = []
    done = asyncio.Event()

    async def on_message(message: AbstractIncomingMessage) -> None:
        if len(mine) < count and match(message):
            await message.ack()
            mine.append(message)
            if len(mine) >= count:
                done.set()
        else:
            others.append(message)

    tag = await queue.consume(on_message)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout)
    finally:
        await queue.cancel(tag)
        for message in others:
            await message.nack(requeue=True)
        await channel.close()
    return mine
