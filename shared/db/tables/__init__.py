"""Every table of the suite, one module per owning service.

A table has exactly one writing service:

- ``subscribers``: subscription service (subscribers, segments, consent ledger, suppressions,
  bounce decisions);
- ``editions``: renderer (one rendered edition per send and language);
- ``deliveries``: dispatcher (sends and their per-recipient delivery ledger);
- ``reports``: bounce receiver (reports that matched no delivery of ours, kept for ops).

Importing this package registers all tables on ``SQLModel.metadata`` (Alembic uses it).
"""

from shared.db.tables.deliveries import Delivery, DeliveryKind, DeliveryStatus, Send, SendStatus
from shared.db.tables.editions import Edition
from shared.db.tables.reports import BounceReport, ReportStatus
from shared.db.tables.subscribers import (
    BounceDecision,
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
    "ConsentRecord",
    "Delivery",
    "DeliveryKind",
    "DeliveryStatus",
    "Edition",
    "ReportStatus",
    "Send",
    "SendStatus",
    "SoftBounceScore",
    "Subscriber",
    "SubscriberLanguage",
    "SubscriberStatus",
    "Suppression",
]
