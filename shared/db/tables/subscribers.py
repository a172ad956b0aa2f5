"""Tables owned (written) by the subscription service.

Addresses are stored normalized (see the subscription service's address rules). ``email_hash``
is the SHA-256 of the normalized address: it survives erasure in ``suppression`` and
``consent_record`` so that an erased or suppressed address cannot come back silently.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Index, Text, UniqueConstraint
from sqlmodel import Column, Field, SQLModel

from shared.db.tables.timestamps import created_at_field, optional_at_field


class SubscriberStatus(StrEnum):
    PENDING = "pending"  # signed up, not yet confirmed (double opt-in)
    ACTIVE = "active"  # confirmed: receives the editions of its languages
    UNSUBSCRIBED = "unsubscribed"  # withdrew consent; may re-subscribe through a new opt-in
    ERASED = "erased"  # personal data removed (GDPR); only hashes remain


class Cadence(StrEnum):
    """How often a reader wants the issue (the preference page; migration 0009)."""

    EVERY = "every"  # every issue
    MONTHLY = "monthly"  # the first issue of each month
    PAUSED = "paused"  # nothing until paused_until (four weeks), then every issue again


class Subscriber(SQLModel, table=True):
    __tablename__ = "subscriber"
    __table_args__ = (Index("ix_subscriber_status_id", "status", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    email: str | None = Field(default=None, max_length=320, unique=True)
    email_hash: str = Field(max_length=64, index=True)
    email_domain: str = Field(default="", max_length=255)
    status: str = Field(default=SubscriberStatus.PENDING, max_length=16)
    locale: str = Field(default="en", max_length=8)  # language of pages and transactional mail
    created_at: datetime = created_at_field()
    updated_at: datetime = created_at_field()
    confirmed_at: datetime | None = optional_at_field()
    unsubscribed_at: datetime | None = optional_at_field()
    last_confirmation_sent_at: datetime | None = optional_at_field()
    # IANA zone from the signup form or the preference page; NULL: the language's default.
    time_zone: str | None = Field(default=None, max_length=64)
    cadence: str = Field(
        default=Cadence.EVERY, max_length=16, sa_column_kwargs={"server_default": "every"}
    )
    paused_until: datetime | None = optional_at_field()


class SubscriberLanguage(SQLModel, table=True):
    """Segment membership: one row per (subscriber, edition language)."""

    __tablename__ = "subscriber_language"
    __table_args__ = (Index("ix_subscriber_language_language", "language", "subscriber_id"),)

    subscriber_id: int = Field(foreign_key="subscriber.id", primary_key=True, ondelete="CASCADE")
    language: str = Field(max_length=8, primary_key=True)


class ConsentRecord(SQLModel, table=True):
    """The consent ledger: which text a person agreed to, when, how; survives unsubscribes."""

    __tablename__ = "consent_record"

    id: int | None = Field(default=None, primary_key=True)
    subscriber_id: int | None = Field(
        default=None, foreign_key="subscriber.id", index=True, ondelete="SET NULL"
    )
    email_hash: str = Field(max_length=64, index=True)
    consent_text_version: str = Field(max_length=32)
    consent_language: str = Field(max_length=8)
    languages: str = Field(default="", max_length=64)  # comma-separated segments chosen
    form: str = Field(default="signup", max_length=64)  # signup form, import, preferences
    source: str = Field(default="", max_length=255)  # page/campaign/import file
    client_ip_hash: str = Field(default="", max_length=64)
    shown_at: datetime | None = optional_at_field()
    given_at: datetime = created_at_field()
    confirmed_at: datetime | None = optional_at_field()
    withdrawn_at: datetime | None = optional_at_field()
    withdrawal_method: str | None = Field(default=None, max_length=32)


class ConfirmationSlot(SQLModel, table=True):
    """When a variant of a mailbox's address (``victim+1@``, ``v.ictim@gmail.com``) last got a
    confirmation mail: one per interval for all of them, so a form cannot mail-bomb an inbox
    through subaddresses (migration 0014; ``services/subscription/mailbox_slots.py``). The key
    is the SHA-256 of the mailbox's own address (``address_rules.mailbox_key``); a row older
    than the interval means nothing and is overwritten by the next claim; an erasure deletes
    it."""

    __tablename__ = "confirmation_slot"

    mailbox_hash: str = Field(max_length=64, primary_key=True)
    last_sent_at: datetime = created_at_field()


class Suppression(SQLModel, table=True):
    """Addresses never to be mailed again (hard bounce, complaint, erasure, manual)."""

    __tablename__ = "suppression"

    email_hash: str = Field(max_length=64, primary_key=True)
    reason: str = Field(max_length=32)
    detail: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    created_at: datetime = created_at_field()
    lifted_at: datetime | None = optional_at_field()
    lift_note: str = Field(default="", max_length=255)  # who lifted it and why (admin API)


class BounceDecision(SQLModel, table=True):
    """One bounce or complaint as read, and what was decided, with its evidence."""

    __tablename__ = "bounce_decision"
    __table_args__ = (UniqueConstraint("event_id", name="uq_bounce_decision_event"),)

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=64)  # id of the bounce event message (idempotency)
    subscriber_id: int | None = Field(
        default=None, foreign_key="subscriber.id", index=True, ondelete="SET NULL"
    )
    delivery_id: int | None = Field(default=None, index=True)
    email_hash: str = Field(max_length=64, index=True)
    email_domain: str = Field(default="", max_length=255, index=True)
    language: str | None = Field(default=None, max_length=8)
    # hard|soft|policy|complaint|delayed|auto-reply|unknown, or "unsubscribe" (mailto, providers)
    bounce_class: str = Field(max_length=16)
    status: str = Field(default="", max_length=16)  # RFC 3463 status, e.g. 5.1.1
    action: str = Field(default="", max_length=16)
    diagnostic: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    source: str = Field(default="", max_length=32)  # smtp|dsn|arf|ses|postmark|sendgrid|imap
    evidence: str = Field(default="", max_length=512)  # file or message reference
    decision: str = Field(max_length=32)  # suppressed|scored|recorded|unsubscribed|ignored
    reason: str = Field(default="", max_length=255)  # why this decision (score, threshold...)
    created_at: datetime = created_at_field(index=True)


class SoftBounceScore(SQLModel, table=True):
    """Mailman-style soft-bounce score: rises at most once a day, decays when stale."""

    __tablename__ = "soft_bounce_score"

    email_hash: str = Field(max_length=64, primary_key=True)
    score: float = 0.0
    last_bounce_at: datetime = created_at_field()
