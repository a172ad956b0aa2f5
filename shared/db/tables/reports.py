"""Tables owned (written) by the bounce receiver.

``bounce_report`` keeps, for operators, the reports that changed nobody: ``unmatched`` ones
(they name a recipient, but nothing in them proves the mail was ours: no verified VERP token,
no signed Message-ID of one of our deliveries, or a recipient other than that delivery's) and
``unreadable`` ones (too deep, too many parts, not parseable). The recipient is kept as a hash
and a domain only; the raw report, when archiving is on, is in the receiver's archive.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from shared.db.tables.timestamps import created_at_field


class ReportStatus(StrEnum):
    UNMATCHED = "unmatched"  # names someone, proves nothing: never suppresses
    UNREADABLE = "unreadable"  # could not be read at all (limits, broken MIME)


class BounceReport(SQLModel, table=True):
    __tablename__ = "bounce_report"
    __table_args__ = (UniqueConstraint("report_key", name="uq_bounce_report_key"),)

    id: int | None = Field(default=None, primary_key=True)
    report_key: str = Field(max_length=64)  # the same report kept twice is one row
    received_at: datetime = created_at_field(index=True)
    status: str = Field(default=ReportStatus.UNMATCHED, max_length=16)
    source: str = Field(max_length=16)  # smtp | imap | ses | postmark | sendgrid
    mailbox: str = Field(default="", max_length=64)  # our role address's local part (abuse)
    bounce_class: str = Field(default="", max_length=16)
    reason: str = Field(default="", max_length=255)  # why it matched no delivery of ours
    recipient_hash: str = Field(default="", max_length=64)  # address_hash of whom it names
    recipient_domain: str = Field(default="", max_length=255)
    reporter_domain: str = Field(default="", max_length=255)  # domain of the report's sender
    evidence: str = Field(default="", max_length=512)  # report Message-ID / event id, archive
    size: int = 0
