"""``/healthz`` (alive), ``/readyz`` (database and RabbitMQ answer) and ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from shared.probes import run_checks

router = APIRouter(tags=["probes"])


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/readyz", summary="Readiness: database and RabbitMQ")
async def readyz(request: Request) -> JSONResponse:
    state = request.app.state

    async def database() -> None:
        async with state.sessions() as session:
            await session.execute(text("SELECT 1"))

    async def broker() -> None:
        if state.connection.is_closed:
            raise ConnectionError("AMQP connection closed")
        channel = await state.connection.channel()
        await channel.close()

    results = await run_checks({"database": database, "rabbitmq": broker})
    ready = all(value == "ok" for value in results.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": results},
        status_code=200 if ready else 503,
    )


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)
