"""The progress of a send, per edition, read from the dispatcher's ``send`` and ``delivery``
tables: counts per delivery state, the recent rate, the time left, and the top deferral and
failure reasons (SMTP replies grouped, addresses reduced to their domain).

Two processes show it: ``newsletter send status`` (the dispatcher's CLI) and the ops page of the
subscription service (``services/subscription/ops/``), which is why it is in ``shared``. The
rest of the ops page's read-models (recent errors, reputation) belong to that service. A test
send (``send.test_to``) is marked as one (its address masked) and never counted with real
sends.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from shared.addresses import mask_email
from shared.db.tables import Delivery, DeliveryStatus, IssueSend, Send, SendStatus
from shared.db.tables.deliveries import TERMINAL_STATUSES

_ADDRESS = re.compile(r"[^\s<>\"'(),;:]+@[A-Za-z0-9.-]+")
OPEN_SEND_STATUSES = (
    SendStatus.REQUESTED,
    SendStatus.PLANNING,
    SendStatus.RUNNING,
    SendStatus.PAUSED,
)
RATE_WINDOW_S = 300

FAILURE_STATUSES: tuple[str, ...] = (
    DeliveryStatus.FAILED,
    DeliveryStatus.BOUNCED,
    DeliveryStatus.UNKNOWN,
)
_RETRYING = (DeliveryStatus.PENDING, DeliveryStatus.QUEUED, DeliveryStatus.SENDING)
# Not sent on purpose, with the reason the dispatcher's claim wrote (unsubscribed or
# suppressed since the planning, a cadence that now leaves the issue out).
NOT_SENT_STATUSES: tuple[str, ...] = (DeliveryStatus.UNSUBSCRIBED, DeliveryStatus.CANCELLED)
# Queue ids, message ids and long numbers vary per message: one reason, many spellings.
_LONG_ID = re.compile(r"\b(?=\w*\d)[0-9A-Za-z]{10,}\b|\b\d{5,}\b")


@dataclass
class LanguageProgress:
    """One edition of a send (its segment's deliveries)."""

    language: str
    counts: dict[str, int] = field(default_factory=dict)
    sent_in_window: int = 0  # mail sent in the last ``window_s`` seconds
    window_s: float = RATE_WINDOW_S

    @property
    def remaining(self) -> int:
        return self.total - self.done

    @property
    def rate_per_s(self) -> float:
        return self.sent_in_window / self.window_s

    @property
    def rate_per_min(self) -> float:
        return 60.0 * self.rate_per_s

    @property
    def eta_s(self) -> float | None:
        """Time left at the recent rate; ``None`` when nothing is moving."""
        if not self.remaining:
            return 0.0
        if not self.sent_in_window:
            return None
        return self.remaining * self.window_s / self.sent_in_window

    @property
    def planned(self) -> int:
        return self.total

    def count(self, *statuses: str) -> int:
        return sum(self.counts.get(s, 0) for s in statuses)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def done(self) -> int:
        return sum(n for status, n in self.counts.items() if status in TERMINAL_STATUSES)

    @property
    def percent(self) -> float:
        return 100.0 * self.done / self.total if self.total else 100.0

    def as_dict(self) -> dict[str, object]:
        return {
            "language": self.language,
            "total": self.total,
            "done": self.done,
            "percent": round(self.percent, 1),
            "remaining": self.remaining,
            "planned": self.planned,
            "rate_per_min": round(self.rate_per_min, 2),
            "eta_s": None if self.eta_s is None else round(self.eta_s),
            "counts": dict(sorted(self.counts.items())),
        }


@dataclass(frozen=True)
class Reason:
    """Deliveries in one state for the same (masked, normalized) SMTP reply."""

    status: str
    reply: str
    count: int
    domains: tuple[tuple[str, int], ...] = ()  # the receiving domains that said it, most first

    def as_dict(self) -> dict[str, object]:
        return {
            "status": self.status,
            "reply": self.reply,
            "count": self.count,
            "domains": [{"domain": d, "count": n} for d, n in self.domains],
        }


@dataclass
class SendProgress:
    send_id: str
    issue_key: str
    status: str
    created_at: datetime
    finished_at: datetime | None
    languages: list[LanguageProgress]
    intent: str = "first"
    test_to: str | None = None  # masked
    reasons: list[Reason] = field(default_factory=list)

    @property
    def in_progress(self) -> bool:
        return self.status in OPEN_SEND_STATUSES

    @property
    def is_test(self) -> bool:
        return self.test_to is not None or self.intent == "test"

    @property
    def planning(self) -> bool:
        return self.status in {SendStatus.REQUESTED, SendStatus.PLANNING}

    def top(self, *statuses: str, limit: int = 3) -> list[Reason]:
        return [r for r in self.reasons if r.status in statuses][:limit]

    def as_dict(self) -> dict[str, object]:
        return {
            "send_id": self.send_id,
            "issue_key": self.issue_key,
            "status": self.status,
            "intent": self.intent,
            "test": self.is_test,
            "test_to": self.test_to,
            "in_progress": self.in_progress,
            "created_at": self.created_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "languages": [lang.as_dict() for lang in self.languages],
            "reasons": [r.as_dict() for r in self.reasons],
        }


def reply_key(code: int | None, reply: str) -> str:
    """One SMTP reply as a reason to group by: addresses reduced to their domain, queue ids
    and long numbers replaced, whitespace collapsed, at most 160 characters."""
    # The recipient's address differs per delivery: keep only its domain.
    text = _ADDRESS.sub(lambda m: "…@" + m.group(0).rsplit("@", 1)[1], reply)
    text = " ".join(text.split())
    text = _LONG_ID.sub("…", text)
    if code is not None and not text.startswith(str(code)):
        text = f"{code} {text}"
    return (text or "no reply")[:160]


async def send_progress(
    *,
    session: AsyncSession,
    limit: int = 10,
    now: datetime | None = None,
    rate_window_s: float = RATE_WINDOW_S,
) -> list[SendProgress]:
    """Open sends first, then the most recent finished ones, each with per-edition counts."""
    open_rows = (
        await session.execute(
            select(Send)
            .where(col(Send.status).in_(OPEN_SEND_STATUSES))
            .order_by(col(Send.created_at).desc())
            .limit(limit)
        )
    ).scalars()
    sends: list[Send] = list(open_rows)
    if len(sends) < limit:
        finished = (
            await session.execute(
                select(Send)
                .where(col(Send.status).not_in(OPEN_SEND_STATUSES))
                .order_by(col(Send.created_at).desc())
                .limit(limit - len(sends))
            )
        ).scalars()
        sends.extend(finished)
    return await _progress(session, sends, now=now or datetime.now(UTC), window_s=rate_window_s)


async def progress_of_send(
    *,
    session: AsyncSession,
    send_id: str,
    now: datetime | None = None,
    rate_window_s: float = RATE_WINDOW_S,
    window_from_start: bool = True,
) -> SendProgress | None:
    """One send's progress per edition, with its top reasons; None if there is no such send.

    A send requested (``issue_send``) that the dispatcher has not planned yet is ``requested``.
    """
    send = await session.get(Send, send_id)
    if send is None:
        requested = await session.get(IssueSend, send_id)
        if requested is None:
            return None
        return SendProgress(
            send_id=send_id,
            issue_key=requested.issue_key,
            status=SendStatus.REQUESTED,
            created_at=requested.requested_at,
            finished_at=None,
            languages=[
                LanguageProgress(language=lang) for lang in requested.segments.split(",") if lang
            ],
            intent=requested.intent,
        )
    [progress] = await _progress(
        session,
        [send],
        now=now or datetime.now(UTC),
        window_s=rate_window_s,
        window_from_start=window_from_start,
    )
    return progress


async def _progress(
    session: AsyncSession,
    sends: list[Send],
    *,
    now: datetime,
    window_s: float,
    window_from_start: bool = False,
) -> list[SendProgress]:
    if not sends:
        return []
    ids = [s.id for s in sends]
    counts: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    rows = await session.execute(
        select(col(Delivery.send_id), col(Delivery.language), col(Delivery.status), func.count())
        .where(col(Delivery.send_id).in_(ids))
        .group_by(col(Delivery.send_id), col(Delivery.language), col(Delivery.status))
    )
    for send_id, language, status, count in rows:
        counts[str(send_id)][str(language)][str(status)] = int(count)
    recent: dict[tuple[str, str], int] = {}
    open_ids = [s.id for s in sends if s.status in OPEN_SEND_STATUSES]
    if open_ids:
        since = now - timedelta(seconds=window_s)
        for send_id, language, count in await session.execute(
            select(col(Delivery.send_id), col(Delivery.language), func.count())
            .where(col(Delivery.send_id).in_(open_ids), col(Delivery.sent_at) >= since)
            .group_by(col(Delivery.send_id), col(Delivery.language))
        ):
            recent[(str(send_id), str(language))] = int(count)
    reasons = await top_reasons(session=session, send_ids=ids)
    result = []
    for send in sends:
        per_language = counts.get(send.id, {})
        planned = [lang for lang in send.languages.split(",") if lang]
        # A send that started less than a window ago has been sending for that long only
        # (the CLI's short window; the ops page keeps its fixed five minutes).
        elapsed = max(1.0, (now - send.created_at).total_seconds())
        window = min(window_s, elapsed) if window_from_start else window_s
        languages = [
            LanguageProgress(
                language=lang,
                counts=dict(per_language.get(lang, {})),
                sent_in_window=recent.get((send.id, lang), 0),
                window_s=window,
            )
            for lang in dict.fromkeys([*planned, *sorted(per_language)])
        ]
        result.append(
            SendProgress(
                send_id=send.id,
                issue_key=send.issue_key,
                status=send.status,
                created_at=send.created_at,
                finished_at=send.finished_at,
                languages=languages,
                intent=send.intent,
                test_to=mask_email(send.test_to) if send.test_to else None,
                reasons=reasons.get(send.id, []),
            )
        )
    return result


async def top_reasons(
    *, session: AsyncSession, send_ids: list[str], per_send: int = 10
) -> dict[str, list[Reason]]:
    """Deferred and failed deliveries of each send grouped by SMTP reply, most frequent first,
    and those not sent on purpose that carry a reason (``NOT_SENT_STATUSES``).

    A deferred delivery keeps the reply of its latest attempt; one that is being retried right
    now (queued or sending again, with that reply still on it) counts as deferred too, so the
    reasons do not flicker with the retry tiers."""
    if not send_ids:
        return {}
    rows = await session.execute(
        select(
            col(Delivery.send_id),
            col(Delivery.status),
            col(Delivery.smtp_code),
            col(Delivery.smtp_reply),
            col(Delivery.email_domain),
            func.count().label("n"),
        )
        .where(
            col(Delivery.send_id).in_(send_ids),
            or_(
                col(Delivery.status).in_((DeliveryStatus.DEFERRED, *FAILURE_STATUSES)),
                and_(
                    col(Delivery.status).in_((*_RETRYING, *NOT_SENT_STATUSES)),
                    col(Delivery.smtp_reply) != "",
                ),
            ),
        )
        .group_by(
            col(Delivery.send_id),
            col(Delivery.status),
            col(Delivery.smtp_code),
            col(Delivery.smtp_reply),
            col(Delivery.email_domain),
        )
        .order_by(func.count().desc())
        .limit(2000)
    )
    grouped: dict[tuple[str, str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for send_id, found, code, reply, domain, count in rows:
        status = DeliveryStatus.DEFERRED if found in _RETRYING else str(found)
        key = (str(send_id), str(status), reply_key(code, str(reply or "")))
        grouped[key][str(domain or "?")] += int(count)
    result: dict[str, list[Reason]] = defaultdict(list)
    for (send_id, status, reply), domains in grouped.items():
        ranked = tuple(sorted(domains.items(), key=lambda item: (-item[1], item[0]))[:3])
        result[send_id].append(Reason(status, reply, sum(domains.values()), ranked))
    return {
        send_id: sorted(found, key=lambda r: (-r.count, r.status, r.reply))[:per_send]
        for send_id, found in result.items()
    }
