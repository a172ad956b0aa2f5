"""Every table of the suite, one module per owning service.

A table has exactly one writing service:

- ``subscribers``: subscription service (subscribers, segments, consent ledger, suppressions,
  bounce decisions);
- ``editions``: renderer (one rendered edition per send and language; the send requests of
  each issue);
- ``deliveries``: dispatcher (sends and their per-recipient delivery ledger);
- ``analytics``: renderer (tracked article links and aggregate click counters, issue 18; the
  per-reader clicks of consenting readers when per-reader mode is on);
- ``reports``: bounce receiver (reports that matched no delivery of ours, kept for ops).

Importing this package registers all tables on ``SQLModel.metadata`` (Alembic uses it).
"""

from shared.db.tables.analytics import (
    ClickVerdict,
    LinkClick,
    MailOpen,
    OpenVerdict,
    ReaderClick,
    TrackedLink,
)
from shared.db.tables.deliveries import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Send,
    SendIntent,
    SendStatus,
    WarmupDomain,
    WarmupQuota,
)
from shared.db.tables.editions import Edition, IssueSend
from shared.db.tables.reports import BounceReport, ReportStatus
from shared.db.tables.subscribers import (
    BounceDecision,
    Cadence,
    ConfirmationSlot,
    ConsentRecord,
    SoftBounceScore,
    Subscriber,
    SubscriberLanguage,
    SubscriberStatus,
    Suppression,
)

__all__ = [
    "BounceDecision",
    "BounceReport",
    "Cadence",
    "ClickVerdict",
    "ConfirmationSlot",
    "ConsentRecord",
    "Delivery",
    "DeliveryKind",
    "DeliveryStatus",
    "Edition",
    "IssueSend",
    "LinkClick",
    "MailOpen",
    "OpenVerdict",
    "ReaderClick",
    "ReportStatus",
    "Send",
    "SendIntent",
    "SendStatus",
    "SoftBounceScore",
    "Subscriber",
    "SubscriberLanguage",
    "SubscriberStatus",
    "Suppression",
    "TrackedLink",
    "WarmupDomain",
    "WarmupQuota",
]
