"""Tables owned (written) by the renderer."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Index, Text, UniqueConstraint
from sqlalchemy import false as sa_false
from sqlalchemy import text as sa_text
from sqlmodel import Column, Field, SQLModel

from shared.db.tables.timestamps import created_at_field

_FIRST_ONLY = sa_text("intent = 'first'")


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


class IssueSend(SQLModel, table=True):
    """One request to send an issue: the issue's identity and the editor's choice.

    An issue (its number, with its dates) has at most one ``first`` send: the partial unique
    index makes the second of two concurrent ``issue send`` fail its insert. Sends to readers
    who have not received it (``only_new``) or to everyone again (``resend_all``) are explicit
    choices; test sends (``test``) never count. ``intent`` takes the values of
    ``shared.db.tables.deliveries.SendIntent``.
    """

    __tablename__ = "issue_send"
    __table_args__ = (
        Index(
            "uq_issue_send_first",
            "issue_key",
            unique=True,
            sqlite_where=_FIRST_ONLY,
            postgresql_where=_FIRST_ONLY,
        ),
    )

    send_id: str = Field(primary_key=True, max_length=36)
    issue_key: str = Field(max_length=64, index=True)
    issue_number: int
    date_from: date
    date_to: date
    intent: str = Field(max_length=16)
    segments: str = Field(max_length=64)  # comma-separated
    origin: str = Field(default="", max_length=16)  # cli | editor | api | command
    requested_at: datetime = created_at_field()
