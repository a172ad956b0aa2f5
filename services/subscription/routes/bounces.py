"""Admin API for bounces: a subscriber's bounce decisions with their evidence, lifting a
suppression, policy refusals per receiving domain, and the reports the bounce receiver kept
because they proved nothing (``unmatched``) or could not be read (``unreadable``): those
changed nobody, and are listed with the recipient's domain and hash only. Bearer
``NEWSLETTER_ADMIN_TOKEN``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, delete, func, select

from services.subscription.dependencies import AdminDep, SessionDep
from services.subscription.routes.params import NO_NUL, RowId
from shared.addresses import address_hash
from shared.db.tables import (
    BounceDecision,
    BounceReport,
    ReportStatus,
    SoftBounceScore,
    Subscriber,
    Suppression,
)

router = APIRouter(
    prefix="/api",
    tags=["bounces"],
    responses={401: {"description": "Missing or wrong bearer token"}},
)


class DecisionPublic(BaseModel):
    id: int
    created_at: datetime
    bounce_class: str
    decision: str
    reason: str
    status: str
    action: str
    diagnostic: str
    source: str
    evidence: str
    delivery_id: int | None
    language: str | None
    email_domain: str


class SuppressionPublic(BaseModel):
    reason: str
    detail: str
    created_at: datetime
    lifted_at: datetime | None
    lift_note: str


class SubscriberBounces(BaseModel):
    subscriber_id: int
    status: str
    suppression: SuppressionPublic | None
    soft_score: float | None
    decisions: list[DecisionPublic]


class LiftRequest(BaseModel):
    note: str = Field(
        default="", max_length=200, pattern=NO_NUL, description="Why the suppression is lifted"
    )


class LiftByAddress(LiftRequest):
    email: str = Field(max_length=320)


class LiftAnswer(BaseModel):
    lifted: bool
    lifted_at: datetime


class ReportPublic(BaseModel):
    """A kept report: enough to investigate (who sent it, about which domain, why it was not
    applied, where the raw copy is), no address."""

    id: int
    received_at: datetime
    status: str
    source: str
    mailbox: str
    bounce_class: str
    reason: str
    recipient_domain: str
    recipient_hash: str
    reporter_domain: str
    evidence: str
    size: int


class ReportCounts(BaseModel):
    hours: int
    unmatched: int
    unreadable: int


class DomainCount(BaseModel):
    domain: str
    bounce_class: str
    count: int


def _decision(row: BounceDecision) -> DecisionPublic:
    return DecisionPublic(
        id=row.id or 0,
        created_at=row.created_at,
        bounce_class=row.bounce_class,
        decision=row.decision,
        reason=row.reason,
        status=row.status,
        action=row.action,
        diagnostic=row.diagnostic,
        source=row.source,
        evidence=row.evidence,
        delivery_id=row.delivery_id,
        language=row.language,
        email_domain=row.email_domain,
    )


async def _subscriber(session: SessionDep, subscriber_id: int) -> Subscriber:
    subscriber = await session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such subscriber")
    return subscriber


@router.get(
    "/subscribers/{subscriber_id}/bounces",
    summary="A subscriber's bounce and complaint decisions, with evidence",
)
async def subscriber_bounces(
    subscriber_id: RowId,
    *,
    _: AdminDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> SubscriberBounces:
    subscriber = await _subscriber(session, subscriber_id)
    rows = await session.exec(
        select(BounceDecision)
        .where(
            (col(BounceDecision.subscriber_id) == subscriber_id)
            | (col(BounceDecision.email_hash) == subscriber.email_hash)
        )
        .order_by(col(BounceDecision.created_at).desc(), col(BounceDecision.id).desc())
        .limit(limit)
    )
    suppression = await session.get(Suppression, subscriber.email_hash)
    score = await session.get(SoftBounceScore, subscriber.email_hash)
    return SubscriberBounces(
        subscriber_id=subscriber_id,
        status=subscriber.status,
        suppression=SuppressionPublic(
            reason=suppression.reason,
            detail=suppression.detail,
            created_at=suppression.created_at,
            lifted_at=suppression.lifted_at,
            lift_note=suppression.lift_note,
        )
        if suppression
        else None,
        soft_score=score.score if score else None,
        decisions=[_decision(r) for r in rows.all()],
    )


async def _lift(session: SessionDep, *, email_hash: str, note: str) -> LiftAnswer:
    suppression = await session.get(Suppression, email_hash)
    if suppression is None or suppression.lifted_at is not None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no active suppression")
    now = datetime.now(UTC)
    suppression.lifted_at = now
    suppression.lift_note = f"admin: {note}"[:255]
    session.add(suppression)
    # A lifted address starts over: an old soft score must not suppress it at the next bounce.
    await session.exec(delete(SoftBounceScore).where(col(SoftBounceScore.email_hash) == email_hash))
    await session.commit()
    return LiftAnswer(lifted=True, lifted_at=now)


@router.post(
    "/subscribers/{subscriber_id}/suppression/lift",
    summary="Lift the suppression of a subscriber's address",
)
async def lift_subscriber_suppression(
    subscriber_id: RowId, body: LiftRequest, *, _: AdminDep, session: SessionDep
) -> LiftAnswer:
    subscriber = await _subscriber(session, subscriber_id)
    return await _lift(session, email_hash=subscriber.email_hash, note=body.note)


@router.post("/suppressions/lift", summary="Lift the suppression of an address")
async def lift_address_suppression(
    body: LiftByAddress, *, _: AdminDep, session: SessionDep
) -> LiftAnswer:
    return await _lift(session, email_hash=address_hash(body.email), note=body.note)


@router.get("/bounces/domains", summary="Bounces and complaints per receiving domain and class")
async def bounces_by_domain(
    *,
    _: AdminDep,
    session: SessionDep,
    hours: Annotated[int, Query(ge=1, le=24 * 90)] = 24,
) -> list[DomainCount]:
    since = datetime.now(UTC) - timedelta(hours=hours)
    rows = await session.exec(
        select(BounceDecision.email_domain, BounceDecision.bounce_class, func.count())
        .where(col(BounceDecision.created_at) >= since)
        .group_by(col(BounceDecision.email_domain), col(BounceDecision.bounce_class))
        .order_by(func.count().desc())
        .limit(500)
    )
    return [DomainCount(domain=d, bounce_class=c, count=n) for d, c, n in rows.all()]


async def kept_report_counts(session: AsyncSession, *, hours: int) -> ReportCounts:
    """How many reports the receiver kept unapplied in the last ``hours`` (the ops page too)."""
    since = datetime.now(UTC) - timedelta(hours=hours)
    rows = await session.execute(
        select(BounceReport.status, func.count())
        .where(col(BounceReport.received_at) >= since)
        .group_by(col(BounceReport.status))
    )
    counts = {str(name): int(count) for name, count in rows.all()}
    return ReportCounts(
        hours=hours,
        unmatched=counts.get(ReportStatus.UNMATCHED, 0),
        unreadable=counts.get(ReportStatus.UNREADABLE, 0),
    )


@router.get(
    "/bounces/reports",
    summary="Reports kept by the bounce receiver that changed nobody (unmatched, unreadable)",
)
async def kept_reports(
    *,
    _: AdminDep,
    session: SessionDep,
    report_status: Annotated[ReportStatus | None, Query(alias="status")] = None,
    hours: Annotated[int, Query(ge=1, le=24 * 90)] = 24 * 7,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[ReportPublic]:
    since = datetime.now(UTC) - timedelta(hours=hours)
    query = select(BounceReport).where(col(BounceReport.received_at) >= since)
    if report_status is not None:
        query = query.where(col(BounceReport.status) == report_status)
    rows = await session.exec(
        query.order_by(col(BounceReport.received_at).desc(), col(BounceReport.id).desc())
        .offset(offset)
        .limit(limit)
    )
    return [
        ReportPublic(
            id=row.id or 0,
            received_at=row.received_at,
            status=row.status,
            source=row.source,
            mailbox=row.mailbox,
            bounce_class=row.bounce_class,
            reason=row.reason,
            recipient_domain=row.recipient_domain,
            recipient_hash=row.recipient_hash,
            reporter_domain=row.reporter_domain,
            evidence=row.evidence,
            size=row.size,
        )
        for row in rows.all()
    ]


@router.get("/bounces/reports/counts", summary="Kept reports in the last hours, by status")
async def kept_reports_counts(
    *, _: AdminDep, session: SessionDep, hours: Annotated[int, Query(ge=1, le=24 * 90)] = 24
) -> ReportCounts:
    return await kept_report_counts(session, hours=hours)
