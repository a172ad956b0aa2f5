"""The ops page's read-models beyond send progress: the latest delivery errors and the bounce
and complaint rates, read-only over the dispatcher's ``delivery`` table and this service's
``bounce_decision`` table. Send progress itself is :mod:`shared.send_progress` (the
dispatcher's CLI shows it too).

Addresses never leave this module: errors carry the receiving domain, and SMTP replies have
any address in them masked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from shared.addresses import mask_email
from shared.db.tables import BounceDecision, Delivery, DeliveryKind, DeliveryStatus

ERROR_STATUSES: tuple[str, ...] = (
    DeliveryStatus.FAILED,
    DeliveryStatus.BOUNCED,
    DeliveryStatus.UNKNOWN,
    DeliveryStatus.DEFERRED,
)
_ADDRESS = re.compile(r"[^\s<>\"'(),;:]+@[A-Za-z0-9.-]+")


@dataclass(frozen=True)
class DeliveryError:
    delivery_id: int
    send_id: str | None
    kind: str
    language: str
    domain: str
    status: str
    attempts: int
    smtp_code: int | None
    smtp_reply: str
    updated_at: datetime

    def as_dict(self) -> dict[str, object]:
        return {
            "delivery_id": self.delivery_id,
            "send_id": self.send_id,
            "kind": self.kind,
            "language": self.language,
            "domain": self.domain,
            "status": self.status,
            "attempts": self.attempts,
            "smtp_code": self.smtp_code,
            "smtp_reply": self.smtp_reply,
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True)
class Reputation:
    """Bounce and complaint rates over one window, against the mail sent in it."""

    window_hours: int
    sent: int
    by_class: dict[str, int]
    top_domains: list[tuple[str, int]]

    @property
    def hard_bounces(self) -> int:
        return self.by_class.get("hard", 0)

    @property
    def complaints(self) -> int:
        return self.by_class.get("complaint", 0)

    @staticmethod
    def _rate(count: int, sent: int) -> float:
        return count / sent if sent else 0.0

    @property
    def hard_bounce_rate(self) -> float:
        return self._rate(self.hard_bounces, self.sent)

    @property
    def complaint_rate(self) -> float:
        return self._rate(self.complaints, self.sent)

    def as_dict(self) -> dict[str, object]:
        return {
            "window_hours": self.window_hours,
            "sent": self.sent,
            "hard_bounces": self.hard_bounces,
            "complaints": self.complaints,
            "hard_bounce_rate": round(self.hard_bounce_rate, 6),
            "complaint_rate": round(self.complaint_rate, 6),
            "by_class": dict(sorted(self.by_class.items())),
            "top_domains": [{"domain": d, "events": n} for d, n in self.top_domains],
        }


def mask_addresses(text: str) -> str:
    """SMTP replies often quote the recipient: keep the reply, mask the address."""
    return _ADDRESS.sub(lambda m: mask_email(m.group(0)), text)


async def recent_errors(*, session: AsyncSession, limit: int = 20) -> list[DeliveryError]:
    """The latest deliveries that failed, bounced, ended unknown or wait for a retry."""
    rows = (
        await session.execute(
            select(Delivery)
            .where(col(Delivery.status).in_(ERROR_STATUSES))
            .order_by(col(Delivery.updated_at).desc(), col(Delivery.id).desc())
            .limit(limit)
        )
    ).scalars()
    return [
        DeliveryError(
            delivery_id=int(d.id or 0),
            send_id=d.send_id,
            kind=d.kind,
            language=d.language,
            domain=d.email_domain,
            status=d.status,
            attempts=d.attempts,
            smtp_code=d.smtp_code,
            smtp_reply=mask_addresses(d.smtp_reply)[:300],
            updated_at=d.updated_at,
        )
        for d in rows
    ]


async def reputation(
    *, session: AsyncSession, window_hours: int, now: datetime | None = None
) -> Reputation:
    """Bounces by class and complaints in the window, and the mail sent in it."""
    since = (now or datetime.now(UTC)) - timedelta(hours=window_hours)
    sent = (
        await session.execute(
            select(func.count())
            .select_from(Delivery)
            .where(col(Delivery.sent_at) >= since, col(Delivery.kind) != DeliveryKind.TEST)
        )
    ).scalar_one()
    by_class: dict[str, int] = {}
    for bounce_class, count in await session.execute(
        select(col(BounceDecision.bounce_class), func.count())
        .where(col(BounceDecision.created_at) >= since)
        .group_by(col(BounceDecision.bounce_class))
    ):
        by_class[str(bounce_class)] = int(count)
    top = await session.execute(
        select(col(BounceDecision.email_domain), func.count().label("n"))
        .where(col(BounceDecision.created_at) >= since)
        .where(col(BounceDecision.bounce_class).in_(("hard", "complaint")))
        .group_by(col(BounceDecision.email_domain))
        .order_by(func.count().desc(), col(BounceDecision.email_domain))
        .limit(5)
    )
    return Reputation(
        window_hours=window_hours,
        sent=int(sent),
        by_class=by_class,
        top_domains=[(str(d or "?"), int(n)) for d, n in top],
    )
