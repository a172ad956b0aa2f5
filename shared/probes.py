"""A small HTTP server for consumer processes: ``/healthz``, ``/readyz`` and ``/metrics``.

The web service mounts the same routes in its FastAPI app; the renderer and the dispatcher,
which have no web app, serve them with this server on their own port, inside their event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ReadinessCheck = Callable[[], Awaitable[None]]


async def run_checks(checks: Mapping[str, ReadinessCheck], timeout: float = 3.0) -> dict[str, str]:
    """Run every check with a timeout; the value is "ok" or the error."""
    results: dict[str, str] = {}
    for name, check in checks.items():
        try:
            await asyncio.wait_for(check(), timeout)
            results[name] = "ok"
        except Exception as err:
            results[name] = f"{type(err).__name__}: {err}"[:200]
    return results


def probe_app(
    checks: Mapping[str, ReadinessCheck], registry: CollectorRegistry = REGISTRY
) -> Starlette:
    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(_: Request) -> Response:
        results = await run_checks(checks)
        ready = all(v == "ok" for v in results.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": results},
            status_code=200 if ready else 503,
        )

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
        ]
    )


class ProbeServer:
    """Runs :func:`probe_app` with uvicorn as a task of the current loop."""

    def __init__(self, app: Starlette, *, host: str, port: int) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False)
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # The process's own composition root owns the signals; uvicorn must not take them.
        self._task = asyncio.create_task(self._serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raise the start-up error (port taken, ...)
            await asyncio.sleep(0.01)

    async def _serve(self) -> None:
        config = self._server.config
        if not config.loaded:
            config.load()
        self._server.lifespan = config.lifespan_class(config)
        await self._server.startup()
        if self._server.should_exit:
            raise OSError(f"probe server could not start on {self._server.config.port}")
        await self._server.main_loop()
        await self._server.shutdown()

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task
