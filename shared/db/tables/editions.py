"""Tables owned (written) by the renderer."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Text, UniqueConstraint
from sqlalchemy import false as sa_false
from sqlmodel import Column, Field, SQLModel

from shared.db.tables.timestamps import created_at_field


class Edition(SQLModel, table=True):
    """One language edition of one send, rendered once; per-recipient values stay placeholders.

    ``html`` and ``text`` hold the placeholders listed in
    ``shared.messaging.placeholders``; the dispatcher fills them per recipient.
    """

    __tablename__ = "edition"
    __table_args__ = (
        UniqueConstraint("send_id", "language", name="uq_edition_send_language"),
        Index("ix_edition_language_rendered", "language", "rendered_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    send_id: str = Field(max_length=36, index=True)
    issue_key: str = Field(max_length=64, index=True)
    language: str = Field(max_length=8)  # the segment this edition goes to
    content_language: str = Field(max_length=8)  # the language it is written in (fallbacks)
    subject: str = Field(max_length=998)
    preheader: str = Field(default="", max_length=998)
    html: str = Field(sa_column=Column(Text, nullable=False))
    text: str = Field(sa_column=Column(Text, nullable=False))
    render_ms: float = 0.0
    # A "[TEST]" send to one address: kept out of the archive and the feeds.
    is_test: bool = Field(default=False, sa_column_kwargs={"server_default": sa_false()})
    rendered_at: datetime = created_at_field()
