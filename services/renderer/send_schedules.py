"""Sends as the editor's admin API shows them: read from the dispatcher's ``send`` table.

The renderer never writes that table: cancel and reschedule go to the dispatcher as
``SendControlled`` with ``apply`` (see ``services.renderer.admin_api``).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import col, select

from services.renderer.store import Sessions
from shared.db.tables import Send


async def listing(
    sessions: Sessions, *, statuses: Sequence[str] = (), limit: int = 100
) -> list[dict[str, object]]:
    query = select(Send).order_by(
        col(Send.scheduled_at).desc().nulls_last(), col(Send.created_at).desc()
    )
    if statuses:
        query = query.where(col(Send.status).in_(list(statuses)))
    async with sessions() as session:
        rows = (await session.exec(query.limit(limit))).all()
    return [
        {
            "send_id": r.id,
            "issue_key": r.issue_key,
            "status": r.status,
            "intent": r.intent,
            "scheduled_at": r.scheduled_at.isoformat() if r.scheduled_at else None,
            "schedule_tz": r.schedule_tz,
            "local_time": r.local_time,
            "started_at": r.started_at.isoformat() if r.started_at else None,
            "finished_at": r.finished_at.isoformat() if r.finished_at else None,
            "total": r.total,
        }
        for r in rows
    ]


async def status_of(sessions: Sessions, *, send_id: str) -> str | None:
    async with sessions() as session:
        return (await session.exec(select(Send.status).where(Send.id == send_id))).first()
