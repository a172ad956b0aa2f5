"""The real subscription app served by uvicorn on a free loopback port (real HTTP, real
lifespan: database and RabbitMQ), for tests that must see what a client on the wire sees."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator

import uvicorn

from services.subscription.app import create_app
from services.subscription.cli import server_options
from services.subscription.policy import SignupPolicy
from shared.settings import Settings
from tests.integration.subscription_support import QUICK
from tests.support.ports import free_port

START_DEADLINE_S = 20.0


def _server(settings: Settings, policy: SignupPolicy = QUICK) -> tuple[uvicorn.Server, int]:
    """The app under uvicorn on a free port with the service's own options (``serve``'s),
    its lifespan on (a start-up error stops it)."""
    port = free_port()
    options = server_options(settings, host="127.0.0.1", port=port)
    config = uvicorn.Config(create_app(settings, policy=policy), **options)  # type: ignore[arg-type]
    return uvicorn.Server(config), port


@contextlib.asynccontextmanager
async def served_subscription(
    settings: Settings, policy: SignupPolicy = QUICK
) -> AsyncIterator[str]:
    """Yield the base URL (``http://127.0.0.1:<port>``) while the app is being served."""
    server, port = _server(settings, policy)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + START_DEADLINE_S
    try:
        while not server.started:
            if task.done():
                task.result()
                raise AssertionError("uvicorn stopped before it started serving")
            if time.monotonic() > deadline:
                raise AssertionError("the subscription app did not start serving in time")
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@contextlib.contextmanager
def subscription_in_thread(settings: Settings) -> Iterator[str]:
    """The same, served from a thread with its own event loop, for synchronous callers
    (Hypothesis drives plain functions, not coroutines)."""
    server, port = _server(settings)
    thread = threading.Thread(target=server.run, name="subscription-app", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_DEADLINE_S
    try:
        while not server.started:
            if not thread.is_alive():
                raise AssertionError("uvicorn stopped before it started serving")
            if time.monotonic() > deadline:
                raise AssertionError("the subscription app did not start serving in time")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(START_DEADLINE_S)
