"""From a raw report (mail, webhook notice) to normalized events on the EVENTS exchange.

Every intake (SMTP receiver, webhooks, IMAP) ends here, so events look the same whatever the
source. Event ids are derived from the report (its Message-ID or the provider's event id) and
the recipient, so the same report delivered twice yields the same ``message_id`` and the
subscription service applies it once.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import structlog

from services.bounces.classifier import Finding, classify
from services.bounces.errors import IntakeUnavailable
from services.bounces.metrics import BounceMetrics
from services.bounces.report import decoded, parse
from shared import verp
from shared.addresses import address_domain
from shared.messaging.publisher import PublishError
from shared.messaging.schemas import BounceReceived, Message, UnsubscribeRequested
from shared.messaging.topology import BOUNCE_RECEIVED, UNSUBSCRIBE_REQUESTED

log = structlog.get_logger(__name__)

_LANGUAGES = {"en", "be", "ru"}
# The pattern of shared.messaging.schemas.SafeAddress: what an event may carry.
_SAFE_ADDRESS = re.compile(r"^[^\s<>(),;:\"\[\]\\\x00]+@[^\s@<>]+$")


class EventPublisher(Protocol):
    async def publish_event(self, message: Message, *, routing_key: str) -> None: ...


@dataclass(frozen=True)
class DeliveryInfo:
    """What the delivery ledger says about a delivery named by a VERP token."""

    email: str
    language: str | None
    subscriber_id: int | None


DeliveryLookup = Callable[[int], Awaitable[DeliveryInfo | None]]
# Records a late outcome on the delivery (``bounced``, ``complained``); a no-op by default.
DeliveryMarker = Callable[[int, str], Awaitable[None]]

_LATE_STATUS = {"hard": "bounced", "complaint": "complained"}


async def no_lookup(_: int) -> DeliveryInfo | None:
    return None


async def no_marker(_: int, __: str) -> None:
    return None


def archive_report(directory: Path, data: bytes) -> Path:
    """Keep the raw report as evidence: ``<dir>/<YYYY-MM-DD>/<sha256 prefix>.eml``."""
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    path = directory / day / f"{hashlib.sha256(data).hexdigest()[:32]}.eml"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part")
        partial.write_bytes(data)
        partial.replace(path)
    return path


def event_id(*parts: object) -> str:
    """A stable 32-hex id for an event: the same report gives the same id."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode())
    return digest.hexdigest()[:32]


def safe_address(address: str) -> str | None:
    """The address if the message schemas accept it (``SafeAddress``), else None."""
    address = address.strip().strip("<>").strip()
    if len(address) > 320 or not _SAFE_ADDRESS.match(address):
        return None
    return address


def prune_archive(directory: Path, *, keep_days: int) -> int:
    """Delete archived reports (they quote addresses) older than ``keep_days``; returns count."""
    if not directory.is_dir():
        return 0
    cutoff = datetime.now(UTC).timestamp() - keep_days * 86400
    removed = 0
    for path in directory.glob("*/*.eml"):
        if path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)
            removed += 1
    for folder in directory.iterdir():
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return removed


class BounceIntake:
    """Classifies reports and publishes one event per recipient."""

    def __init__(
        self,
        *,
        publisher: EventPublisher,
        secret_key: str,
        metrics: BounceMetrics | None = None,
        lookup: DeliveryLookup = no_lookup,
        marker: DeliveryMarker = no_marker,
        archive_dir: Path | None = None,
    ) -> None:
        self._publisher = publisher
        self._secret_key = secret_key
        self._metrics = metrics
        self._lookup = lookup
        self._marker = marker
        self._archive = archive_dir

    async def handle_mail(
        self, data: bytes, *, envelope_to: Sequence[str] = (), source: str = "smtp"
    ) -> list[Message]:
        """A mail for a return path or the mailto unsubscribe address."""
        for rcpt in envelope_to:
            subscriber_id = verp.subscriber_from_unsubscribe_mailto(
                secret_key=self._secret_key, address=rcpt
            )
            if subscriber_id is not None:
                return await self._unsubscribe(data, subscriber_id=subscriber_id, rcpt=rcpt)
        findings = classify(data, secret_key=self._secret_key, envelope_to=envelope_to)
        message_id = decoded(parse(data).message.get("Message-ID", "")) or event_id(data)
        evidence = message_id
        if self._archive is not None:
            try:
                path = await asyncio.to_thread(archive_report, self._archive, data)
                evidence = f"{message_id} file={path}"
            except OSError as err:  # evidence is best effort; the bounce itself must go on
                log.warning("bounce_archive_failed", error=str(err)[:200])
        return await self.publish_findings(
            findings, source=source, evidence=evidence, event_key=message_id
        )

    async def _unsubscribe(self, data: bytes, *, subscriber_id: int, rcpt: str) -> list[Message]:
        parsed = parse(data)
        sender = safe_address(parsed.message.get("From", "").rpartition("<")[2].rstrip(">"))
        event = UnsubscribeRequested(
            message_id=event_id("mailto", subscriber_id, parsed.header("Message-ID") or data),
            recipient=sender or rcpt,
            method="mailto",
            subscriber_id=subscriber_id,
        )
        await self._publish(event, UNSUBSCRIBE_REQUESTED)
        log.info("unsubscribe_mail_received", subscriber_id=subscriber_id)
        return [event]

    async def publish_findings(
        self,
        findings: Sequence[Finding],
        *,
        source: str,
        evidence: str,
        event_key: str | None = None,
    ) -> list[Message]:
        """Publish one event per finding; ``event_key`` (default ``evidence``) makes ids stable."""
        published: list[Message] = []
        for finding in findings:
            event = await self._event(
                finding, source=source, evidence=evidence, event_key=event_key or evidence
            )
            if event is None:
                log.info("bounce_ignored", reason=finding.reason, bounce_class=finding.bounce_class)
                continue
            await self._publish(event, BOUNCE_RECEIVED)
            late = _LATE_STATUS.get(event.bounce_class)
            if late is not None and event.delivery_id is not None:
                await self._marker(event.delivery_id, late)
            if self._metrics is not None:
                self._metrics.observe(
                    bounce_class=event.bounce_class,
                    language=event.language,
                    domain=address_domain(event.recipient),
                )
            log.info(
                "bounce_received",
                bounce_class=event.bounce_class,
                status=event.status,
                source=source,
                delivery_id=event.delivery_id,
                recipient=event.recipient,
            )
            published.append(event)
        return published

    async def _event(
        self, finding: Finding, *, source: str, evidence: str, event_key: str
    ) -> BounceReceived | None:
        recipient = safe_address(finding.recipient) if finding.recipient else None
        language: str | None = None
        if finding.delivery_id is not None:
            info = await self._lookup(finding.delivery_id)
            if info is not None:
                recipient = safe_address(info.email) or recipient  # VERP beats the report
                language = info.language if info.language in _LANGUAGES else None
        if recipient is None:
            return None
        return BounceReceived(
            # Not the source: the same report read over SMTP and over IMAP is one event.
            message_id=event_id(event_key, recipient.lower(), finding.bounce_class),
            recipient=recipient,
            bounce_class=finding.bounce_class,
            status=finding.status[:16],
            action=finding.action[:16],
            diagnostic=finding.diagnostic[:2000],
            source=source[:32],
            evidence=f"{evidence[:300]} ({finding.reason})"[:512],
            delivery_id=finding.delivery_id,
            language=language,
        )

    async def publish_event(self, event: Message, *, routing_key: str) -> None:
        """Publish any event on the EVENTS exchange (webhook unsubscribes use this)."""
        await self._publish(event, routing_key)

    async def _publish(self, event: Message, routing_key: str) -> None:
        try:
            await self._publisher.publish_event(event, routing_key=routing_key)
        except PublishError as err:
            raise IntakeUnavailable(str(err)) from err
