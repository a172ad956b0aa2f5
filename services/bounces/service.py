"""Composition root of the bounce receiver: ``run(settings, stop=...)``.

Opens the database engine (to read which delivery a VERP token or signed Message-ID names, and
to keep unmatched and unreadable reports in ``bounce_report``), a robust AMQP
connection with a confirming publisher, declares the topology, then serves SMTP (return paths
and the mailto unsubscribe address) and HTTP (webhooks and probes) until ``stop`` is set, and
optionally polls an IMAP mailbox. Everything is closed in ``finally``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AsyncExitStack, suppress
from datetime import UTC, datetime
from pathlib import Path

import structlog
from prometheus_client import REGISTRY, CollectorRegistry
from sqlalchemy import text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from services.bounces.auth import PostmarkAuth, SendGridVerifier, load_public_key
from services.bounces.imap import ImapTarget, poll_forever
from services.bounces.intake import (
    BounceIntake,
    DeliveryInfo,
    DeliveryLookup,
    DeliveryMarker,
    KeptReport,
    ReportKeeper,
    prune_archive,
)
from services.bounces.metrics import BounceMetrics
from services.bounces.settings import BouncesSettings
from services.bounces.smtp_receiver import ReturnPathHandler, start_smtp_server
from services.bounces.sns import CertificateFetcher, SnsVerifier, fetch_certificate
from services.bounces.webhooks import WebhookHandlers, webhook_app
from shared.addresses import address_domain, address_hash
from shared.db.tables import BounceReport, Delivery, DeliveryStatus
from shared.probes import ProbeServer, probe_app
from shared.rate_limit import SlidingWindowLimiter
from shared.resources import open_resources
from shared.settings import SettingsError

log = structlog.get_logger(__name__)

_MAX_DELIVERY_ID = 2**31 - 1  # delivery.id is an INTEGER column
REPORT_WINDOW_S = 60.0


def report_budget(
    per_minute: int, *, clock: Callable[[], float] = time.monotonic
) -> SlidingWindowLimiter:
    """Reports per minute per source (a client IP, a provider): a request costs one unit per
    event it carries, and a batch bigger than the budget costs the whole budget."""
    return SlidingWindowLimiter(
        limit=per_minute, window_s=REPORT_WINDOW_S, max_keys=50_000, clock=clock
    )


def delivery_lookup(sessions: async_sessionmaker[AsyncSession]) -> DeliveryLookup:
    async def lookup(delivery_id: int) -> DeliveryInfo | None:
        if not 0 < delivery_id <= _MAX_DELIVERY_ID:
            return None
        async with sessions() as session:
            row = await session.get(Delivery, delivery_id)
        if row is None or not row.email:  # an erased delivery names nobody any more
            return None
        return DeliveryInfo(
            email=row.email,
            language=row.language,
            subscriber_id=row.subscriber_id,
            message_id=row.message_id,
        )

    return lookup


def report_keeper(sessions: async_sessionmaker[AsyncSession]) -> ReportKeeper:
    """Insert a ``bounce_report`` row; the same report kept twice stays one row."""

    async def keep(report: KeptReport) -> None:
        row = BounceReport(
            report_key=report.report_key[:64],
            status=report.status,
            source=report.source[:16],
            mailbox=report.mailbox[:64],
            bounce_class=report.bounce_class[:16],
            reason=report.reason[:255],
            recipient_hash=address_hash(report.recipient) if report.recipient else "",
            recipient_domain=address_domain(report.recipient)[:255] if report.recipient else "",
            reporter_domain=report.reporter[:255],
            evidence=report.evidence[:512],
            size=report.size,
        )
        async with sessions() as session:
            session.add(row)
            try:
                await session.commit()
            except IntegrityError:  # already kept (a retried delivery of the same report)
                await session.rollback()

    return keep


def delivery_marker(sessions: async_sessionmaker[AsyncSession]) -> DeliveryMarker:
    """Record a late bounce or complaint on a delivery that had been ``sent``.

    Only ``sent`` rows change (both states are terminal, so a send's progress is unchanged);
    a delivery still in flight is left to the worker that owns it.
    """

    async def mark(delivery_id: int, status: str) -> None:
        async with sessions() as session:
            await session.exec(
                update(Delivery)
                .where(col(Delivery.id) == delivery_id)
                .where(col(Delivery.status) == DeliveryStatus.SENT)
                .values(status=status, updated_at=datetime.now(UTC))
            )
            await session.commit()

    return mark


def webhook_handlers(
    settings: BouncesSettings, *, intake: BounceIntake, cert_fetcher: CertificateFetcher
) -> WebhookHandlers:
    key_text = settings.bounces_sendgrid_public_key
    try:
        sendgrid_key = load_public_key(key_text) if key_text.strip() else None
    except ValueError as err:
        raise SettingsError(f"NEWSLETTER_BOUNCES_SENDGRID_PUBLIC_KEY: {err}") from err
    return WebhookHandlers(
        intake=intake,
        verifier=SnsVerifier(
            cert_host_pattern=settings.bounces_sns_cert_hosts, fetcher=cert_fetcher
        ),
        postmark=PostmarkAuth(
            basic_auth=settings.bounces_postmark_basic_auth.get_secret_value(),
            token=settings.bounces_postmark_token.get_secret_value(),
        ),
        sendgrid=SendGridVerifier(
            public_key=sendgrid_key, max_age_s=settings.bounces_sendgrid_max_age_s
        ),
        topic_arns=settings.sns_topic_arns,
        per_ip=report_budget(settings.bounces_rate_per_ip),
        per_provider=report_budget(settings.bounces_rate_per_provider),
        max_bytes=settings.bounces_webhook_max_bytes,
        opener=cert_fetcher,
    )


async def _prune_daily(directory: Path, *, keep_days: int, stop: asyncio.Event) -> None:
    while not stop.is_set():
        removed = await asyncio.to_thread(prune_archive, directory, keep_days=keep_days)
        if removed:
            log.info("bounce_archive_pruned", removed=removed)
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=24 * 3600)


async def run(
    settings: BouncesSettings,
    *,
    stop: asyncio.Event,
    registry: CollectorRegistry = REGISTRY,
    cert_fetcher: CertificateFetcher = fetch_certificate,
    started: asyncio.Event | None = None,
) -> None:
    """Serve until ``stop`` is set. ``started`` is set once both servers listen."""
    async with AsyncExitStack() as stack:
        resources = await open_resources(
            stack, database_url=settings.database_url, amqp_url=settings.amqp_url
        )
        engine, sessions = resources.engine, resources.sessions
        connection, publisher = resources.connection, resources.publisher
        secret = settings.secret_key.get_secret_value()
        archive = settings.var_dir / "bounces"
        if settings.bounces_archive_days > 0:
            pruner = asyncio.create_task(
                _prune_daily(archive, keep_days=settings.bounces_archive_days, stop=stop)
            )
            stack.push_async_callback(asyncio.wait_for, pruner, 10)
        metrics = BounceMetrics(registry)
        intake = BounceIntake(
            publisher=publisher,
            secret_key=secret,
            metrics=metrics,
            lookup=delivery_lookup(sessions),
            marker=delivery_marker(sessions),
            keeper=report_keeper(sessions),
            archive_dir=archive if settings.bounces_archive_days > 0 else None,
        )
        handler = ReturnPathHandler(
            intake=intake,
            secret_key=secret,
            domain=settings.return_path_domain,
            accept_locals=settings.accept_locals,
            budget=report_budget(settings.bounces_rate_per_ip),
        )
        smtp = await start_smtp_server(
            handler,
            host=settings.bounces_smtp_host,
            port=settings.bounces_smtp_port,
            hostname=settings.return_path_domain,
        )
        stack.push_async_callback(smtp.wait_closed)
        stack.callback(smtp.close)

        async def broker_ready() -> None:
            if connection.is_closed:
                raise ConnectionError("AMQP connection closed")

        async def database_ready() -> None:
            async with engine.connect() as db:
                await db.execute(text("SELECT 1"))

        http = ProbeServer(
            webhook_app(
                webhook_handlers(settings, intake=intake, cert_fetcher=cert_fetcher),
                probe_app({"broker": broker_ready, "database": database_ready}, registry),
                enabled=settings.webhooks,
                metrics=metrics,
            ),
            host=settings.http_host,
            port=settings.bounces_http_port,
        )
        await http.start()
        stack.push_async_callback(http.stop)
        if settings.bounces_imap_url:
            poller = asyncio.create_task(
                poll_forever(
                    intake=intake,
                    target=ImapTarget.parse(settings.bounces_imap_url),
                    interval=settings.bounces_imap_interval_s,
                    stop=stop,
                )
            )
            stack.push_async_callback(asyncio.wait_for, poller, 35)
        log.info(
            "bounces_receiver_started",
            smtp_port=settings.bounces_smtp_port,
            http_port=settings.bounces_http_port,
        )
        if started is not None:
            started.set()
        await stop.wait()
    log.info("bounces_receiver_stopped")
