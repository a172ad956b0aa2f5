"""Tables owned (written) by the dispatcher: sends and the per-recipient delivery ledger."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import Index, Text, UniqueConstraint
from sqlmodel import Column, Field, SQLModel

from shared.db.tables.timestamps import created_at_field, optional_at_field


class SendStatus(StrEnum):
    REQUESTED = "requested"
    SCHEDULED = "scheduled"  # rendered and checked; the scheduler starts it at scheduled_at
    PLANNING = "planning"
    RUNNING = "running"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    DONE = "done"


class DeliveryKind(StrEnum):
    ISSUE = "issue"
    TRANSACTIONAL = "transactional"
    TEST = "test"  # one copy of an edition to the editor's test address, subject "[TEST] ..."


class SendIntent(StrEnum):
    """Why a send of an issue exists: an issue goes to its readers once unless chosen otherwise."""

    FIRST = "first"  # the issue's send to its readers (one per issue)
    ONLY_NEW = "only_new"  # readers who have not received the issue (new, or failed for good)
    RESEND_ALL = "resend_all"  # every reader again, confirmed by typing the issue number
    TEST = "test"  # "[TEST]" to one address: never counts as the issue's send


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # in the outbox: job not yet confirmed, or parked while paused
    QUEUED = "queued"  # job confirmed by the broker
    SENDING = "sending"  # claimed by a worker (until lease_until); SMTP transaction in progress
    SENT = "sent"  # 250 after DATA
    DEFERRED = "deferred"  # temporary failure, tried again at due_at
    BOUNCED = "bounced"  # permanent failure for the address
    FAILED = "failed"  # policy refusal, retry window exhausted, poison
    UNKNOWN = "unknown"  # timeout after DATA: may or may not have arrived
    CANCELLED = "cancelled"  # the send was cancelled before this went out
    COMPLAINED = "complained"
    UNSUBSCRIBED = "unsubscribed"  # unsubscribed between planning and delivery


TERMINAL_STATUSES = frozenset(
    {
        DeliveryStatus.SENT,
        DeliveryStatus.BOUNCED,
        DeliveryStatus.FAILED,
        DeliveryStatus.UNKNOWN,
        DeliveryStatus.CANCELLED,
        DeliveryStatus.COMPLAINED,
        DeliveryStatus.UNSUBSCRIBED,
    }
)


# The reader has the edition, may have it, or will get it from a send still running: an
# ``--only-new`` send of the same issue leaves them out. Bounced, failed, cancelled and
# unsubscribed deliveries did not reach the reader.
RECEIVED_STATUSES = frozenset(
    {
        DeliveryStatus.PENDING,
        DeliveryStatus.QUEUED,
        DeliveryStatus.SENDING,
        DeliveryStatus.DEFERRED,
        DeliveryStatus.SENT,
        DeliveryStatus.UNKNOWN,
        DeliveryStatus.COMPLAINED,
    }
)


OPEN_STATUSES = frozenset(
    {
        DeliveryStatus.PENDING,
        DeliveryStatus.QUEUED,
        DeliveryStatus.SENDING,
        DeliveryStatus.DEFERRED,
    }
)


class Send(SQLModel, table=True):
    __tablename__ = "send"

    id: str = Field(primary_key=True, max_length=36)
    issue_key: str = Field(max_length=64, index=True)
    languages: str = Field(max_length=64)  # comma-separated segments
    fallbacks: str = Field(default="", max_length=128)  # "be=ru,..." segment=edition language
    status: str = Field(default=SendStatus.REQUESTED, max_length=16)
    total: int = 0
    test_to: str | None = Field(default=None, max_length=320)  # a test send: no audience
    intent: str = Field(
        default=SendIntent.FIRST, max_length=16, sa_column_kwargs={"server_default": "first"}
    )
    created_at: datetime = created_at_field()
    planned_at: datetime | None = optional_at_field()
    finished_at: datetime | None = optional_at_field()
    cancelled_at: datetime | None = optional_at_field()
    # Scheduling (migration 0009): a ``scheduled`` send starts at scheduled_at; local_time
    # ("HH:MM") gives each reader the issue at that hour in their own zone.
    scheduled_at: datetime | None = optional_at_field()
    schedule_tz: str | None = Field(default=None, max_length=64)
    local_time: str | None = Field(default=None, max_length=5)
    start_requested_at: datetime | None = optional_at_field()  # a scheduler published its start
    started_at: datetime | None = optional_at_field()


class Delivery(SQLModel, table=True):
    __tablename__ = "delivery"
    __table_args__ = (
        # One mail per edition a reader chose: a reader of en and ru gets both.
        UniqueConstraint(
            "send_id", "subscriber_id", "language", name="uq_delivery_send_subscriber_language"
        ),
        UniqueConstraint("dedupe_key", name="uq_delivery_dedupe_key"),
        Index("ix_delivery_send_status", "send_id", "status"),
        # The reconciler's scans: one status's deadlines in order (migration 0007).
        Index("ix_delivery_status_due", "status", "due_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    # "send:<send>:<subscriber>:<language>", "send:<send>:test:<language>" or "tx:<command id>"
    dedupe_key: str = Field(max_length=128)
    kind: str = Field(default=DeliveryKind.ISSUE, max_length=16)
    send_id: str | None = Field(default=None, max_length=36, foreign_key="send.id")
    subscriber_id: int | None = Field(default=None)
    email: str = Field(max_length=320)
    email_domain: str = Field(max_length=255, index=True)
    language: str = Field(max_length=8)
    status: str = Field(default=DeliveryStatus.PENDING, max_length=16)
    attempts: int = 0
    smtp_code: int | None = None
    smtp_reply: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    message_id: str = Field(default="", max_length=255)
    created_at: datetime = created_at_field()
    updated_at: datetime = created_at_field()
    queued_at: datetime | None = optional_at_field()  # first published (the retry window)
    sent_at: datetime | None = optional_at_field()
    # Deadlines (migration 0007). An open row always has one the reconciler can act on:
    # pending: not before (a held or parked row; NULL = now); queued: by when its job should
    # have been consumed; deferred: the next attempt.
    due_at: datetime | None = optional_at_field()
    lease_until: datetime | None = optional_at_field()  # sending: the claimer owns it until then
    claimed_by: str | None = Field(default=None, max_length=36)  # the claiming process
    retries: int = 0  # deferrals so far: the delay tier of the next attempt
    redriven: int = 0  # jobs published again by the reconciler because theirs was gone


class WarmupDomain(SQLModel, table=True):
    """A sending domain marked new (migration 0009): what it sends to each receiving domain is
    capped per day on a ramp (``caps``, e.g. "50,100,200"; empty = the setting's), counted
    from ``started_on``; after the last cap the domain is warm."""

    __tablename__ = "warmup_domain"

    domain: str = Field(primary_key=True, max_length=255)
    started_on: date
    caps: str = Field(default="", max_length=255)
    created_at: datetime = created_at_field()


class WarmupQuota(SQLModel, table=True):
    """What relays reserved of a warm-up day's cap for one receiving domain (migration 0012).

    A relay reserves before it publishes, with one conditional ``UPDATE`` of this row; the
    database serialises the reservations of every dispatcher process, so the day's cap holds
    exactly. ``last_grant`` is what the latest reservation got."""

    __tablename__ = "warmup_quota"

    sending_domain: str = Field(primary_key=True, max_length=255)
    day: date = Field(primary_key=True)
    email_domain: str = Field(primary_key=True, max_length=255)
    used: int = 0
    last_grant: int = 0


class DispatcherProcess(SQLModel, table=True):
    """A running dispatcher process and its heartbeat (migration 0007): a ``sending`` row whose
    claimer has stopped beating is taken over before its lease ends."""

    __tablename__ = "dispatcher_process"

    id: str = Field(primary_key=True, max_length=36)
    started_at: datetime = created_at_field()
    seen_at: datetime = created_at_field()
