"""An ASGI app (the subscription app, as a test builds it) under uvicorn on a real socket of
this event loop, stopped on the way out, so that a browser, nginx or httpx reaches it as readers
reach the public origin::

    async with on_socket(create_app(settings, policy=policy), port=port) as base:
        ...
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette

from shared.probes import ProbeServer


@contextlib.asynccontextmanager
async def on_socket(app: Starlette, *, port: int) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1:``port`` (from ``free_port``); yields its base URL."""
    server = ProbeServer(app, host="127.0.0.1", port=port)
    await server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await server.stop()
