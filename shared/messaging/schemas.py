"""Message bodies: versioned pydantic models, one per command or event.

Every body carries ``schema_version`` and ``type``; the AMQP ``type`` property repeats
``type`` so that tools can route and display messages without decoding them. A consumer that
meets an unknown version or type rejects the message to the dead-letter queue.

Commands are imperative (``RenderTransactional``), events are past tense (``BounceReceived``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Language = Literal["en", "be", "ru"]
TransactionalKind = Literal["confirmation", "welcome", "goodbye"]
# Why a send of an issue exists (shared.db.tables.deliveries.SendIntent, without "test": a
# test send is one with ``test_to``).
SendIntentName = Literal["first", "only_new", "resend_all"]
BounceClass = Literal["hard", "soft", "policy", "complaint", "delayed", "auto-reply", "unknown"]
# Addresses in messages have already been validated and normalized by their producer; this
# rejects anything that could smuggle a header or a second recipient.
SafeAddress = Annotated[
    str, StringConstraints(max_length=320, pattern=r"^[^\s<>(),;:\"\[\]\\\x00]+@[^\s@<>]+$")
]


def _new_id() -> str:
    return uuid.uuid4().hex


def _now() -> datetime:
    return datetime.now(UTC)


class Message(BaseModel):
    """Base of every body. ``message_id`` doubles as the idempotency key."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    type_name: ClassVar[str] = "message"

    schema_version: Literal[1] = 1
    message_id: str = Field(default_factory=_new_id, max_length=64)
    created_at: datetime = Field(default_factory=_now)


class RenderTransactional(Message):
    """subscription -> renderer: render a confirmation, welcome or goodbye mail."""

    type_name: ClassVar[str] = "render_transactional"
    type: Literal["render_transactional"] = "render_transactional"
    kind: TransactionalKind
    language: Language
    subscriber_id: int
    to: SafeAddress
    # Absolute links the mail shows: confirm_url, unsubscribe_url, preferences_url,
    # one_click_url (for List-Unsubscribe). Tokens stay inside these URLs only.
    links: dict[str, str] = Field(default_factory=dict)


class DeliverTransactional(Message):
    """renderer -> dispatcher: a rendered transactional mail for one recipient."""

    type_name: ClassVar[str] = "deliver_transactional"
    type: Literal["deliver_transactional"] = "deliver_transactional"
    kind: TransactionalKind
    language: Language
    subscriber_id: int
    to: SafeAddress
    subject: str = Field(max_length=998)
    html: str
    text: str
    list_unsubscribe_url: str | None = None  # one-click URL (RFC 8058), if the mail has one


class SendSchedule(BaseModel):
    """When a send starts and at which local hour its readers get it (issue 17).

    ``start_at`` (aware UTC): the send stays ``scheduled`` until then (None: at once);
    ``time_zone``: the zone the editor wrote ``start_at`` in (for display);
    ``local_time`` ("HH:MM"): each reader gets it at that hour in their own zone.
    """

    start_at: datetime | None = None
    time_zone: str | None = Field(default=None, max_length=64)
    local_time: str | None = Field(default=None, pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")


class RenderIssue(Message):
    """editor's CLI -> renderer: render one edition per segment, then ask for the send."""

    type_name: ClassVar[str] = "render_issue"
    type: Literal["render_issue"] = "render_issue"
    send_id: str = Field(max_length=36)
    issue_key: str = Field(max_length=64)
    # The issue's source files, language -> file text; the renderer parses them again.
    sources: dict[str, str]
    segments: list[Language]
    fallbacks: dict[str, Language] = Field(default_factory=dict)  # segment -> edition language
    test_to: SafeAddress | None = None  # send every edition to this address only, "[TEST]"
    intent: SendIntentName = "first"
    schedule: SendSchedule | None = None  # start later, or at each reader's local hour
    # Article links through signed click redirects (issue 18); never for a test send.
    tracking: bool = True


class PlanSend(Message):
    """renderer -> dispatcher: editions are stored; plan deliveries for these segments."""

    type_name: ClassVar[str] = "plan_send"
    type: Literal["plan_send"] = "plan_send"
    send_id: str = Field(max_length=36)
    issue_key: str = Field(max_length=64)
    segments: list[Language]
    fallbacks: dict[str, Language] = Field(default_factory=dict)
    test_to: SafeAddress | None = None
    # only_new: leave out readers who have (or will get) this issue from an earlier send.
    intent: SendIntentName = "first"
    schedule: SendSchedule | None = None


class DeliverIssue(Message):
    """planner -> dispatcher workers: one delivery of one edition to one subscriber."""

    type_name: ClassVar[str] = "deliver_issue"
    type: Literal["deliver_issue"] = "deliver_issue"
    delivery_id: int
    send_id: str = Field(max_length=36)
    subscriber_id: int | None
    to: SafeAddress
    language: Language
    first_attempt_at: datetime = Field(default_factory=_now)
    # The reader's own zone when they gave one (None: their edition's default): the worker
    # keeps the quiet hours with it, for the job and for a deferral's next attempt.
    time_zone: str | None = Field(default=None, max_length=64)


class SendControlled(Message):
    """CLI/admin -> dispatchers: pause, resume or cancel a send."""

    type_name: ClassVar[str] = "send_controlled"
    type: Literal["send_controlled"] = "send_controlled"
    send_id: str = Field(max_length=36)
    action: Literal["pause", "resume", "cancel", "reschedule"]
    # reschedule (a scheduled send that has not started): the new start and its zone
    start_at: datetime | None = None
    time_zone: str | None = Field(default=None, max_length=64)
    # The admin API asks the dispatcher to apply cancel/reschedule (it owns the send row);
    # the dispatcher's CLI applies them itself and only tells the others.
    apply: bool = False


class BounceReceived(Message):
    """bounce intake (SMTP, webhooks, IMAP, dispatcher) -> subscription: apply a decision."""

    type_name: ClassVar[str] = "bounce_received"
    type: Literal["bounce_received"] = "bounce_received"
    recipient: SafeAddress
    bounce_class: BounceClass
    status: str = Field(default="", max_length=16)
    action: str = Field(default="", max_length=16)
    diagnostic: str = Field(default="", max_length=2000)
    source: str = Field(max_length=32)
    evidence: str = Field(default="", max_length=512)
    delivery_id: int | None = None
    language: Language | None = None


class UnsubscribeRequested(Message):
    """mailto List-Unsubscribe intake -> subscription."""

    type_name: ClassVar[str] = "unsubscribe_requested"
    type: Literal["unsubscribe_requested"] = "unsubscribe_requested"
    recipient: SafeAddress
    method: str = Field(default="mailto", max_length=32)
    delivery_id: int | None = None
    subscriber_id: int | None = None  # from the signed mailto address, when it names one


class DomainPolicyAlerted(Message):
    """subscription feedback -> dispatchers: a receiving domain refuses us (policy storm).

    Published when policy bounces from one domain reach ``threshold`` within ``window_s``;
    dispatchers open that domain's circuit breaker for ``pause_s`` (nobody is suppressed).
    """

    type_name: ClassVar[str] = "domain_policy_alerted"
    type: Literal["domain_policy_alerted"] = "domain_policy_alerted"
    domain: str = Field(max_length=255)
    policy_bounces: int  # policy bounces from this domain within the window
    window_s: int
    threshold: int
    pause_s: int  # how long the sender should hold mail to this domain
    sample_status: str = Field(default="", max_length=16)
    sample_diagnostic: str = Field(default="", max_length=500)


class SubscriberErased(Message):
    """subscription -> dispatcher: a subscriber was erased (GDPR); forget their address.

    Carries no address: the dispatcher blanks the address of every delivery row of that
    subscriber, and its claims already skip a subscriber who is no longer active.
    """

    type_name: ClassVar[str] = "subscriber_erased"
    type: Literal["subscriber_erased"] = "subscriber_erased"
    subscriber_id: int


ANY_MESSAGE: tuple[type[Message], ...] = (
    RenderTransactional,
    DeliverTransactional,
    RenderIssue,
    PlanSend,
    DeliverIssue,
    SendControlled,
    BounceReceived,
    UnsubscribeRequested,
    DomainPolicyAlerted,
    SubscriberErased,
)

M = TypeVar("M", bound=Message)


class UndecodableMessage(ValueError):
    """A body that is not valid JSON of the expected type and version (a poison message)."""


def decode(model: type[M], body: bytes) -> M:
    """Parse ``body`` as ``model`` or raise :class:`UndecodableMessage` with the reason."""
    try:
        return model.model_validate_json(body)
    except ValueError as err:
        raise UndecodableMessage(f"{model.type_name}: {err}") from err
