"""The renderer process's composition root: engine, AMQP connection, publisher, consumers and
the HTTP server (probes, view-in-browser and archive pages, feeds, editor page, admin API)."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import structlog
from prometheus_client import CollectorRegistry
from sqlalchemy import text

from services.renderer.catalogs import Publication, Templates
from services.renderer.clicks import ClickMetrics, ClickService
from services.renderer.consumer import RenderConsumers, RenderServices
from services.renderer.metrics import RendererMetrics
from services.renderer.opens import OpenTokens
from services.renderer.settings import RendererSettings, from_settings
from services.renderer.tracking import LinkTokens
from services.renderer.web import build_app
from shared.probes import ProbeServer
from shared.resources import open_resources
from shared.settings import Settings
from shared.tokens import TokenSigner

log = structlog.get_logger(__name__)


async def run(
    settings: Settings, *, stop: asyncio.Event, registry: CollectorRegistry | None = None
) -> None:
    """Run until ``stop`` is set, then close everything (in reverse order of opening)."""
    config: RendererSettings = from_settings(settings)
    registry = registry if registry is not None else CollectorRegistry()
    async with AsyncExitStack() as stack:
        resources = await open_resources(
            stack, database_url=config.database_url, amqp_url=config.amqp_url
        )
        engine, sessions = resources.engine, resources.sessions
        connection, publisher = resources.connection, resources.publisher

        templates = Templates(publication=Publication.from_settings(config))
        metrics = RendererMetrics(registry)
        signer = TokenSigner(config.secret_key.get_secret_value())
        clicks = ClickService(
            sessions=sessions,
            signer=signer,
            flush_s=config.click_flush_s,
            burst_window_s=config.click_burst_window_s,
            metrics=ClickMetrics(registry),
            per_reader=config.per_reader_analytics,
            sweep_s=config.reader_click_sweep_s,
        )
        stop_flusher = asyncio.Event()
        flusher = asyncio.create_task(clicks.run_flusher(stop_flusher))

        async def stop_clicks() -> None:  # after the HTTP server: the last clicks are written
            stop_flusher.set()
            await flusher

        stack.push_async_callback(stop_clicks)
        deps = RenderServices(
            templates=templates,
            publisher=publisher,
            sessions=sessions,
            metrics=metrics,
            pages_url=config.pages_url,
            link_tokens=LinkTokens(signer),
            open_tokens=OpenTokens(signer) if config.open_tracking else None,
            per_reader=config.per_reader_analytics,
        )
        consumers = RenderConsumers(deps)
        await consumers.start(connection)
        stack.push_async_callback(consumers.stop)

        async def database_ready() -> None:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))

        async def broker_ready() -> None:
            if connection.is_closed:
                raise ConnectionError("AMQP connection is closed")

        app = build_app(
            settings=config,
            sessions=sessions,
            publisher=publisher,
            templates=templates,
            checks={"database": database_ready, "broker": broker_ready},
            registry=registry,
            clicks=clicks,
        )
        server = ProbeServer(app, host=config.http_host, port=config.renderer_probe_port)
        await server.start()
        stack.push_async_callback(server.stop)
        log.info(
            "renderer_started",
            port=config.renderer_probe_port,
            pages=config.pages_url,
        )
        await stop.wait()
        log.info("renderer_stopping")
