"""From a raw report (mail, webhook notice) to normalized events on the EVENTS exchange.

Every intake (SMTP receiver, webhooks, IMAP) ends here, so events look the same whatever the
source, and so does the rule of trust: **a report changes a reader only when it matches a
delivery of ours**:

- mail: a verified VERP token (envelope, report headers or the returned ``Return-Path``) names
  the delivery, and the event is about that delivery's address (the report may name a
  forwarding address); or a signed Message-ID of one of our deliveries is quoted in the
  returned part (``references.py``) and the report names that delivery's address, or no
  address at all (redacted complaints): the address then comes from the ledger;
- webhooks: a VERP source, signed Message-ID, or caller-supplied ``delivery_id`` names a
  delivery whose address is the one the event names.

Anything else is kept as an ``unmatched`` report for operators (``bounce_report``) and changes
nobody; a mail that cannot be read at all is kept as ``unreadable`` and accepted, since it will
never parse. Event ids are derived from the report (its Message-ID or the provider's event id)
and the recipient, so the same report delivered twice yields the same ``message_id``.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path
from typing import Protocol

import structlog

from services.bounces.classifier import classify
from services.bounces.errors import IntakeUnavailable
from services.bounces.finding import Finding
from services.bounces.limits import mime_problem
from services.bounces.metrics import BounceMetrics
from services.bounces.providers import Notice
from services.bounces.references import References, find_references
from shared import message_ids, verp
from shared.addresses import address_domain
from shared.db.tables.reports import ReportStatus
from shared.messaging.publisher import PublishError
from shared.messaging.schemas import BounceReceived, Message, UnsubscribeRequested
from shared.messaging.topology import BOUNCE_RECEIVED, UNSUBSCRIBE_REQUESTED

log = structlog.get_logger(__name__)

_LANGUAGES = {"en", "be", "ru"}
# The pattern of shared.messaging.schemas.SafeAddress: what an event may carry.
_SAFE_ADDRESS = re.compile(r"^[^\s<>(),;:\"\[\]\\\x00]+@[^\s@<>]+$")
_ADDRESS = re.compile(r"[A-Za-z0-9._%+=-]{1,64}@[A-Za-z0-9.-]{1,253}")
_MAX_CANDIDATES = 5  # deliveries looked up per report
_MAX_KEPT = 10  # unmatched rows per report
_MAX_FINDINGS = 1000  # recipients read from one report or webhook request
_QUIET_CLASSES = {"unknown", "auto-reply"}


class EventPublisher(Protocol):
    async def publish_event(self, message: Message, *, routing_key: str) -> None: ...


@dataclass(frozen=True)
class DeliveryInfo:
    """What the delivery ledger says about one of our deliveries."""

    email: str
    language: str | None
    subscriber_id: int | None
    message_id: str = ""  # the Message-ID it was sent with ("" before it was sent)


@dataclass(frozen=True)
class KeptReport:
    """A report that changed nobody, for ``bounce_report`` (the keeper hashes the address)."""

    report_key: str
    status: str
    source: str
    reason: str
    mailbox: str = ""
    bounce_class: str = ""
    recipient: str = ""
    reporter: str = ""
    evidence: str = ""
    size: int = 0


DeliveryLookup = Callable[[int], Awaitable[DeliveryInfo | None]]
# Records a late outcome on the delivery (``bounced``, ``complained``); a no-op by default.
DeliveryMarker = Callable[[int, str], Awaitable[None]]
ReportKeeper = Callable[[KeptReport], Awaitable[None]]

_LATE_STATUS = {"hard": "bounced", "complaint": "complained"}


async def no_lookup(_: int) -> DeliveryInfo | None:
    return None


async def no_marker(_: int, __: str) -> None:
    return None


async def no_keeper(_: KeptReport) -> None:
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
    text = "\x1f".join(str(p) for p in parts)
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:32]


def safe_address(address: str) -> str | None:
    """The address if the message schemas accept it (``SafeAddress``), else None."""
    address = address.strip().strip("<>").strip()
    if len(address) > 320 or not _SAFE_ADDRESS.match(address):
        return None
    return address


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def same_address(reported: str, ours: str) -> bool:
    """Equal but for ASCII case (RFC 5321 2.4: domains are case-insensitive, and so are local
    parts in practice). Only ASCII letters fold: ``str.lower`` would make a KELVIN SIGN (U+212A)
    an ASCII ``k``, so a look-alike address would stand for a reader's."""
    given = reported.strip(" \t\r\n").strip("<>").strip(" \t")
    return bool(given) and given.translate(_ASCII_LOWER) == ours.strip().translate(_ASCII_LOWER)


def storable(text: str) -> str:
    """Text PostgreSQL can store and UTF-8 can encode: no NUL, no lone surrogates (the mail
    parser keeps undecodable bytes as surrogate escapes)."""
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")


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


@dataclass(frozen=True)
class Proof:
    """Deliveries a report names through something we signed, or that a caller claims."""

    verp: tuple[int, ...] = ()  # verified VERP tokens
    signed: tuple[int, ...] = ()  # signed Message-IDs, signed provider references
    claimed: tuple[int, ...] = ()  # plain ids a provider passed on: address must match
    verp_names_address: bool = False  # mail: the VERP delivery's address wins over the report


@dataclass(frozen=True)
class Match:
    delivery_id: int
    info: DeliveryInfo


@dataclass(frozen=True)
class _ReadMail:
    findings: list[Finding]
    references: References
    message_id: str
    reporter: str


def _read_mail(data: bytes, secret_key: str, envelope_to: Sequence[str]) -> _ReadMail:
    """The CPU part (in a worker thread): classify, find our references, read the headers."""
    headers = BytesHeaderParser(policy=compat32).parsebytes(data)
    sender = _ADDRESS.findall(str(headers.get("From", "")))
    return _ReadMail(
        findings=classify(data, secret_key=secret_key, envelope_to=envelope_to),
        references=find_references(data),
        message_id=" ".join(str(headers.get("Message-ID", "")).split())[:300],
        reporter=address_domain(sender[0]) if sender else "",
    )


def _unique(ids: Sequence[int | None]) -> tuple[int, ...]:
    return tuple(dict.fromkeys(i for i in ids if i is not None))


def _pick(recipient: str, candidates: list[Match], proof: Proof) -> tuple[Match | None, str]:
    """Among deliveries the report proves, the one whose address it names."""
    if recipient:
        for candidate in candidates:
            if same_address(recipient, candidate.info.email):
                return candidate, ""
        return None, "the recipient is not the address of the delivery it quotes"
    # No recipient named (a redacted complaint): the ledger says who it was, if the proof is
    # ours (signed) and points at one address; a bare claimed id is not enough.
    unsigned = set(proof.claimed) - set(proof.signed) - set(proof.verp)
    proven = [c for c in candidates if c.delivery_id not in unsigned]
    if proven and len({c.info.email.lower() for c in proven}) == 1:
        return proven[0], ""
    return None, "no recipient, and no single delivery of ours it is about"


class BounceIntake:
    """Matches reports to our deliveries and publishes one event per matched recipient."""

    def __init__(
        self,
        *,
        publisher: EventPublisher,
        secret_key: str,
        metrics: BounceMetrics | None = None,
        lookup: DeliveryLookup = no_lookup,
        marker: DeliveryMarker = no_marker,
        keeper: ReportKeeper = no_keeper,
        archive_dir: Path | None = None,
    ) -> None:
        self._publisher = publisher
        self._secret_key = secret_key
        self._metrics = metrics
        self._lookup = lookup
        self._marker = marker
        self._keeper = keeper
        self._archive = archive_dir

    # ---- mail (SMTP, IMAP) -------------------------------------------------------------

    async def handle_mail(
        self, data: bytes, *, envelope_to: Sequence[str] = (), source: str = "smtp"
    ) -> list[Message]:
        """A mail for a return path, a role address or the mailto unsubscribe address."""
        for rcpt in envelope_to:
            subscriber_id = verp.subscriber_from_unsubscribe_mailto(
                secret_key=self._secret_key, address=rcpt
            )
            if subscriber_id is not None and subscriber_id > 0:  # 0: a mail to no subscriber
                return await self._unsubscribe(data, subscriber_id=subscriber_id, rcpt=rcpt)
        mailbox = self._mailbox(envelope_to)
        report_key = hashlib.sha256(data).hexdigest()[:32]
        problem = mime_problem(data)
        read: _ReadMail | None = None
        if problem is None:
            try:
                read = await asyncio.to_thread(
                    _read_mail, data, self._secret_key, list(envelope_to)
                )
            except Exception as err:  # it will never parse: retrying would loop the sender
                problem = f"cannot be parsed: {type(err).__name__}"
        evidence = await self._archived(data, read.message_id if read else f"<{report_key}>")
        if read is None:
            await self._keep(
                KeptReport(
                    report_key=report_key,
                    status=ReportStatus.UNREADABLE,
                    source=source,
                    reason=f"unreadable report: {problem}"[:255],
                    mailbox=mailbox,
                    evidence=evidence,
                    size=len(data),
                )
            )
            return []
        return await self._mail_findings(
            read,
            envelope_to=envelope_to,
            source=source,
            mailbox=mailbox,
            evidence=evidence,
            size=len(data),
            report_key=report_key,
        )

    def _mailbox(self, envelope_to: Sequence[str]) -> str:
        """The role address (local part) a report was sent to, if not a VERP return path."""
        for rcpt in envelope_to:
            if verp.delivery_from_return_path(secret_key=self._secret_key, address=rcpt) is None:
                return rcpt.strip().strip("<>").rpartition("@")[0].lower()[:64]
        return ""

    async def _archived(self, data: bytes, message_id: str) -> str:
        if self._archive is None:
            return message_id
        try:
            path = await asyncio.to_thread(archive_report, self._archive, data)
        except OSError as err:  # evidence is best effort; the bounce itself must go on
            log.warning("bounce_archive_failed", error=str(err)[:200])
            return message_id
        return f"{message_id} file={path}"

    async def _mail_findings(
        self,
        read: _ReadMail,
        *,
        envelope_to: Sequence[str],
        source: str,
        mailbox: str,
        evidence: str,
        size: int,
        report_key: str,
    ) -> list[Message]:
        refs = read.references
        addresses = [*envelope_to, *refs.addresses]
        proof = Proof(
            verp=_unique(
                [
                    *(
                        verp.delivery_from_return_path(secret_key=self._secret_key, address=a)
                        for a in addresses
                    ),
                    *(getattr(f, "delivery_id", None) for f in read.findings),
                ]
            ),
            signed=_unique(
                [
                    message_ids.delivery_from_message_id(secret_key=self._secret_key, message_id=m)
                    for m in refs.message_ids
                ]
            ),
            verp_names_address=True,
        )
        event_key = read.message_id or report_key
        published: list[Message] = []
        done: set[tuple[int, str]] = set()
        kept = 0
        cache: dict[int, DeliveryInfo | None] = {}
        for finding in read.findings[:_MAX_FINDINGS]:
            match, why = await self._match(finding.recipient, proof, cache)
            if match is None:
                if finding.bounce_class in _QUIET_CLASSES and not finding.recipient:
                    log.info("bounce_ignored", reason=finding.reason[:120])
                    continue
                if kept < _MAX_KEPT:
                    kept += 1
                    ours = " (quotes our List-Id)" if refs.list_ids else ""
                    await self._keep(
                        KeptReport(
                            report_key=event_id(report_key, finding.recipient.lower(), kept),
                            status=ReportStatus.UNMATCHED,
                            source=source,
                            reason=f"{why}{ours}"[:255],
                            mailbox=mailbox,
                            bounce_class=finding.bounce_class,
                            recipient=finding.recipient,
                            reporter=read.reporter,
                            evidence=evidence,
                            size=size,
                        )
                    )
                continue
            if (match.delivery_id, finding.bounce_class) in done:
                continue  # a VERP report naming 300 addresses is one event about its delivery
            done.add((match.delivery_id, finding.bounce_class))
            event = await self._publish_finding(
                finding, match, source=source, evidence=evidence, event_key=event_key
            )
            if event is not None:
                published.append(event)
        return published

    async def _unsubscribe(self, data: bytes, *, subscriber_id: int, rcpt: str) -> list[Message]:
        """The signed address names the subscriber; the ``From`` header is the sender's to
        choose, so it names nobody: the event's recipient is the signed address itself, and a
        subscriber that no longer exists (erased) cannot fall back to whoever ``From`` names."""
        try:
            message_id = str(
                BytesHeaderParser(policy=compat32).parsebytes(data)["Message-ID"] or ""
            )
        except Exception:  # the signed address is what counts, not the headers
            message_id = ""
        event = UnsubscribeRequested(
            message_id=event_id(
                "mailto", subscriber_id, message_id or hashlib.sha256(data).hexdigest()
            ),
            recipient=safe_address(rcpt) or f"unsubscribe+{subscriber_id}@invalid",
            method="mailto",
            subscriber_id=subscriber_id,
        )
        await self._publish(event, UNSUBSCRIBE_REQUESTED)
        log.info("unsubscribe_mail_received", subscriber_id=subscriber_id)
        return [event]

    # ---- matching ----------------------------------------------------------------------

    async def _delivery(
        self, delivery_id: int, cache: dict[int, DeliveryInfo | None]
    ) -> DeliveryInfo | None:
        if delivery_id not in cache:
            try:
                cache[delivery_id] = await self._lookup(delivery_id)
            except Exception as err:  # our database: transient, the sender retries
                raise IntakeUnavailable(f"delivery lookup failed: {type(err).__name__}") from err
        return cache[delivery_id]

    async def _match(
        self, recipient: str, proof: Proof, cache: dict[int, DeliveryInfo | None]
    ) -> tuple[Match | None, str]:
        """The delivery of ours this recipient's report is about, or None and why not."""
        if proof.verp_names_address:
            for delivery_id in proof.verp[:_MAX_CANDIDATES]:
                info = await self._delivery(delivery_id, cache)
                if info is not None and safe_address(info.email):
                    return Match(delivery_id, info), ""
        ids = (() if proof.verp_names_address else proof.verp) + proof.signed + proof.claimed
        candidates: list[Match] = []
        for delivery_id in _unique(list(ids))[:_MAX_CANDIDATES]:
            info = await self._delivery(delivery_id, cache)
            if info is not None and safe_address(info.email):
                candidates.append(Match(delivery_id, info))
        if not candidates:
            if ids or proof.verp:
                return None, "names no delivery in our ledger"
            return None, "no VERP token, signed Message-ID or delivery id of ours"
        return _pick(recipient.strip(), candidates, proof)

    # ---- publishing --------------------------------------------------------------------

    async def _publish_finding(
        self, finding: Finding, match: Match, *, source: str, evidence: str, event_key: str
    ) -> BounceReceived | None:
        recipient = safe_address(match.info.email)
        if recipient is None:
            return None
        language = match.info.language if match.info.language in _LANGUAGES else None
        event = BounceReceived(
            # Not the source: the same report read over SMTP and over IMAP is one event.
            message_id=event_id(event_key, recipient.lower(), finding.bounce_class),
            recipient=recipient,
            bounce_class=finding.bounce_class,
            status=finding.status[:16],
            action=finding.action[:16],
            diagnostic=storable(finding.diagnostic[:2000]),
            source=source[:32],
            evidence=storable(f"{evidence[:300]} ({finding.reason})"[:512]),
            delivery_id=match.delivery_id,
            language=language,
        )
        await self._publish(event, BOUNCE_RECEIVED)
        late = _LATE_STATUS.get(event.bounce_class)
        if late is not None:
            try:
                await self._marker(match.delivery_id, late)
            except Exception as err:  # the event is out; the ledger mark is retried with it
                raise IntakeUnavailable(f"delivery mark failed: {type(err).__name__}") from err
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
        )
        return event

    def _proof_of(self, notice: Notice) -> Proof:
        signed = [
            message_ids.delivery_from_message_id(secret_key=self._secret_key, message_id=m)
            for m in notice.message_ids
        ]
        claimed: list[int | None] = []
        if notice.claimed:
            reference = verp.delivery_from_reference(
                secret_key=self._secret_key, value=notice.claimed
            )
            if reference is not None:
                signed.append(reference)
            elif notice.claimed.isdigit():
                claimed.append(int(notice.claimed))
        return Proof(
            verp=_unique(
                [
                    verp.delivery_from_return_path(secret_key=self._secret_key, address=a)
                    for a in notice.return_paths
                ]
            ),
            signed=_unique(signed),
            claimed=_unique(claimed),
        )

    async def publish_notices(self, notices: Sequence[Notice], *, source: str) -> int:
        """Webhook notices: publish the matched ones, keep the others; returns events published."""
        count = 0
        kept = 0
        cache: dict[int, DeliveryInfo | None] = {}
        for notice in notices[:_MAX_FINDINGS]:
            finding = notice.finding
            match, why = await self._match(finding.recipient, self._proof_of(notice), cache)
            if match is None:
                if kept < _MAX_KEPT * 10:
                    kept += 1
                    await self._keep(
                        KeptReport(
                            report_key=event_id(source, notice.evidence, finding.recipient.lower()),
                            status=ReportStatus.UNMATCHED,
                            source=source,
                            reason=why,
                            bounce_class="unsubscribe"
                            if notice.unsubscribe
                            else finding.bounce_class,
                            recipient=finding.recipient,
                            evidence=notice.evidence[:512],
                        )
                    )
                continue
            if notice.unsubscribe:
                recipient = safe_address(match.info.email)
                if recipient is None:
                    continue
                event = UnsubscribeRequested(
                    message_id=event_id(source, notice.evidence, recipient.lower()),
                    recipient=recipient,
                    method=source[:32],
                    delivery_id=match.delivery_id,
                    subscriber_id=match.info.subscriber_id,
                )
                await self._publish(event, UNSUBSCRIBE_REQUESTED)
                count += 1
                continue
            if await self._publish_finding(
                finding, match, source=source, evidence=notice.evidence, event_key=notice.evidence
            ):
                count += 1
        return count

    # ---- keeping and publishing ------------------------------------------------------------

    async def _keep(self, report: KeptReport) -> None:
        report = replace(
            report,
            report_key=storable(report.report_key),
            reason=storable(report.reason),
            mailbox=storable(report.mailbox),
            recipient=storable(report.recipient),
            reporter=storable(report.reporter),
            evidence=storable(report.evidence),
        )
        try:
            await self._keeper(report)
        except Exception as err:  # our database: a transient outage of ours, so retry later
            raise IntakeUnavailable(f"cannot keep the report: {type(err).__name__}") from err
        if self._metrics is not None:
            self._metrics.kept.labels(status=report.status, source=report.source).inc()
        log.info(
            "bounce_report_kept",
            status=report.status,
            source=report.source,
            mailbox=report.mailbox,
            bounce_class=report.bounce_class,
            reason=report.reason,
            recipient_domain=address_domain(report.recipient) if report.recipient else "",
        )

    async def publish_event(self, event: Message, *, routing_key: str) -> None:
        """Publish any event on the EVENTS exchange."""
        await self._publish(event, routing_key)

    async def _publish(self, event: Message, routing_key: str) -> None:
        try:
            await self._publisher.publish_event(event, routing_key=routing_key)
        except PublishError as err:
            raise IntakeUnavailable(str(err)) from err
