"""The admin API under ``/api``: bearer ``NEWSLETTER_ADMIN_TOKEN`` on every call.

List and search subscribers, count them per language segment, import CSV, export CSV or
JSON, and erase (GDPR). Documented in the app's OpenAPI schema (``/docs``, ``/openapi.json``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, File, HTTPException, Query, UploadFile
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlmodel import select

from services.subscription.address_rules import normalize_address
from services.subscription.csv_export import csv_lines
from services.subscription.csv_import import MAX_IMPORT_BYTES, ImportReport, import_csv
from services.subscription.data_export import SubscriberData, subscriber_data
from services.subscription.dependencies import AdminDep, PublisherDep, SessionDep
from services.subscription.directory import (
    SegmentCount,
    SubscriberPage,
    SubscriberPublic,
    export_subscribers,
    get_subscriber,
    list_subscribers,
    segment_counts,
)
from services.subscription.erasure import erase_address, erase_subscriber
from services.subscription.errors import ImportRejected, InvalidAddress
from services.subscription.routes.params import NO_NUL, Offset, RowId
from shared.db.tables import Subscriber, SubscriberStatus
from shared.messaging.publisher import Publisher, PublishError
from shared.messaging.schemas import SubscriberErased
from shared.messaging.topology import SUBSCRIBER_ERASED

router = APIRouter(
    prefix="/api",
    tags=["admin"],
    responses={401: {"description": "Missing or wrong bearer token"}},
)

StatusFilter = Literal["pending", "active", "unsubscribed"]
LanguageFilter = Literal["en", "be", "ru"]


class SegmentsAnswer(BaseModel):
    segments: list[SegmentCount]


class ErasureRequest(BaseModel):
    email: str = Field(max_length=320, description="The address to erase and suppress")


class ErasureAnswer(BaseModel):
    erased_subscriber_id: int | None
    suppressed: bool = True


@router.get("/subscribers", summary="List and search subscribers")
async def subscribers(
    *,
    _: AdminDep,
    session: SessionDep,
    status: StatusFilter | None = None,
    language: LanguageFilter | None = None,
    q: Annotated[
        str | None, Query(max_length=320, pattern=NO_NUL, description="Part of the address")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> SubscriberPage:
    return await list_subscribers(
        session=session, status=status, language=language, search=q, limit=limit, offset=offset
    )


@router.get("/segments", summary="Subscriber counts per language segment and status")
async def segments(_: AdminDep, session: SessionDep) -> SegmentsAnswer:
    return SegmentsAnswer(segments=await segment_counts(session=session))


@router.get(
    "/subscribers/export",
    summary="Export subscribers as CSV or JSON",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}, "application/json": {}}}},
)
async def export(
    _: AdminDep,
    session: SessionDep,
    format: Literal["csv", "json"] = "csv",
    status: StatusFilter | None = None,
    language: LanguageFilter | None = None,
) -> StreamingResponse:
    rows = export_subscribers(session=session, status=status, language=language)
    if format == "json":
        return StreamingResponse(
            _json_lines(rows),
            media_type="application/json",
            headers={"Content-Disposition": 'attachment; filename="subscribers.json"'},
        )
    return StreamingResponse(
        csv_lines(rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="subscribers.csv"'},
    )


async def _json_lines(rows: AsyncIterator[SubscriberPublic]) -> AsyncIterator[str]:
    yield "["
    first = True
    async for row in rows:
        yield ("" if first else ",") + json.dumps(row.model_dump(mode="json"), ensure_ascii=False)
        first = False
    yield "]"


@router.get(
    "/subscribers/{subscriber_id}",
    summary="One subscriber",
    responses={404: {"description": "No such subscriber"}},
)
async def subscriber(_: AdminDep, session: SessionDep, subscriber_id: RowId) -> SubscriberPublic:
    found = await get_subscriber(session=session, subscriber_id=subscriber_id)
    if found is None:
        raise HTTPException(status_code=404, detail="no such subscriber")
    return found


@router.get(
    "/subscribers/{subscriber_id}/data",
    summary="Everything kept about one subscriber (GDPR export)",
    description="The subscriber, every consent ledger row (grants and withdrawals, per-reader "
    "analytics included) and their per-reader clicks (per-reader mode, with consent).",
    responses={404: {"description": "No such subscriber"}},
)
async def subscriber_export(
    _: AdminDep, session: SessionDep, subscriber_id: RowId
) -> SubscriberData:
    found = await subscriber_data(session=session, subscriber_id=subscriber_id)
    if found is None:
        raise HTTPException(status_code=404, detail="no such subscriber")
    return found


@router.post(
    "/subscribers/import",
    summary="Import subscribers from CSV",
    description=(
        "CSV with a header row: `email` (required), `languages` (editions separated by "
        "spaces or `;`), `locale`. Without `prior_consent` people are stored as pending and "
        "are not mailed until they confirm; with it they are active and the ledger records "
        "`source` and `consent_text_version`. Suppressed and known addresses are skipped."
    ),
    responses={400: {"description": "The file is unusable"}},
)
async def import_subscribers(
    _: AdminDep,
    session: SessionDep,
    file: Annotated[UploadFile, File(description="UTF-8 CSV file")],
    source: Annotated[
        str, Query(min_length=1, max_length=255, pattern=NO_NUL, description="Consent source")
    ],
    prior_consent: bool = False,
    consent_text_version: Annotated[str, Query(max_length=32, pattern=NO_NUL)] = "import",
) -> ImportReport:
    data = await file.read(MAX_IMPORT_BYTES + 1)
    try:
        return await import_csv(
            session=session,
            data=data,
            source=source,
            prior_consent=prior_consent,
            consent_text_version=consent_text_version,
        )
    except ImportRejected as err:
        raise HTTPException(status_code=400, detail=str(err)) from err


@router.delete(
    "/subscribers/{subscriber_id}",
    summary="Erase a subscriber (GDPR)",
    description="Personal data is removed; a hashed suppression entry stays. The dispatcher "
    "and the renderer are told first (`SubscriberErased`): the dispatcher blanks the address "
    "in its delivery rows, the renderer deletes the per-reader clicks; if they cannot be told, "
    "nothing is erased and the answer is 503.",
    responses={
        404: {"description": "No such subscriber"},
        503: {"description": "The message bus did not take the event; nothing was erased"},
    },
)
async def erase(
    _: AdminDep, session: SessionDep, publisher: PublisherDep, subscriber_id: RowId
) -> ErasureAnswer:
    subscriber = await session.get(Subscriber, subscriber_id)
    if subscriber is None or subscriber.status == SubscriberStatus.ERASED:
        raise HTTPException(status_code=404, detail="no such subscriber")
    await _tell_dispatcher(publisher, subscriber_id)
    await erase_subscriber(session=session, subscriber_id=subscriber_id)
    return ErasureAnswer(erased_subscriber_id=subscriber_id)


async def _tell_dispatcher(publisher: Publisher, subscriber_id: int) -> None:
    """Publish ``SubscriberErased`` before erasing: an erasure the dispatcher never hears of
    would leave the address in its delivery rows."""
    try:
        await publisher.publish_event(
            SubscriberErased(subscriber_id=subscriber_id), routing_key=SUBSCRIBER_ERASED
        )
    except PublishError as err:
        raise HTTPException(
            status_code=503,
            detail="the message bus did not take the erasure event; nothing was erased, try again",
        ) from err


@router.post(
    "/erasures",
    summary="Erase an address (GDPR), subscribed or not",
    description="Erases the subscriber with this address, if any, and suppresses its hash.",
    responses={422: {"description": "Not an address"}},
)
async def erase_by_address(
    _: AdminDep, session: SessionDep, publisher: PublisherDep, body: ErasureRequest
) -> ErasureAnswer:
    try:
        address = normalize_address(body.email)
    except InvalidAddress as err:
        raise HTTPException(status_code=422, detail=f"email: {err.reason}") from err
    found = await session.exec(select(Subscriber.id).where(Subscriber.email == address.email))
    subscriber_id = found.first()
    if subscriber_id is not None:
        await _tell_dispatcher(publisher, subscriber_id)
    erased = await erase_address(
        session=session, email=address.email, email_hash=address.email_hash
    )
    return ErasureAnswer(erased_subscriber_id=erased)
