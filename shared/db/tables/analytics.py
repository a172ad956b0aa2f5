"""Tables owned (written) by the renderer's click counter (issue 18, editorial analytics).

Aggregate only: no column names a subscriber, an address, a delivery or a client. A row of
``link_click`` is a count per issue, edition, article, link, day and verdict (``counted`` for a
reader's click, or why it was filtered: ``head``, ``prefetch``, ``scanner``, ``burst``).
``tracked_link`` holds the target of every link the renderer rewrote, so a token of a few
bytes names its target and a redirect never goes anywhere the issue did not link.
``mail_open`` (only with ``NEWSLETTER_OPEN_TRACKING=true``) counts loads of an edition's open
pixel per issue, edition, day and verdict, under the same rule: no reader is named.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import Text
from sqlmodel import Column, Field, SQLModel

from shared.db.tables.timestamps import created_at_field


class ClickVerdict(StrEnum):
    COUNTED = "counted"  # a reader's click
    HEAD = "head"  # a HEAD request (link checkers, scanners)
    PREFETCH = "prefetch"  # Purpose / Sec-Purpose: prefetch, X-Moz: prefetch
    SCANNER = "scanner"  # a known link scanner's User-Agent
    BURST = "burst"  # one client followed every link of the mail within seconds


class TrackedLink(SQLModel, table=True):
    """One article link of one issue edition; the redirect target of its token."""

    __tablename__ = "tracked_link"

    issue_number: int = Field(primary_key=True)
    edition: str = Field(primary_key=True, max_length=8)  # the segment the mail went to
    article: int = Field(primary_key=True)  # index of the article in the issue (from 0)
    link: int = Field(primary_key=True)  # index of the link in the article (from 0)
    article_key: str = Field(max_length=128)  # the ``{#key}`` of the article
    article_title: str = Field(default="", max_length=998)
    url: str = Field(sa_column=Column(Text, nullable=False))
    updated_at: datetime = created_at_field()


class LinkClick(SQLModel, table=True):
    """Clicks of one link per UTC day and verdict (counts only)."""

    __tablename__ = "link_click"

    issue_number: int = Field(primary_key=True)
    edition: str = Field(primary_key=True, max_length=8)
    article: int = Field(primary_key=True)
    link: int = Field(primary_key=True)
    day: date = Field(primary_key=True)
    verdict: str = Field(primary_key=True, max_length=16)
    count: int = 0


class OpenVerdict(StrEnum):
    """What a load of the open pixel was taken for (``services/renderer/opens.py``)."""

    LOADED = "loaded"  # a mail program showed the images (or a proxy we cannot tell apart)
    GMAIL_PROXY = "gmail_proxy"  # Gmail's image proxy: a reader opened it, through Google
    APPLE_PROXY = "apple_proxy"  # likely Apple Mail Privacy Protection's preload (no reader)
    HEAD = "head"
    PREFETCH = "prefetch"
    SCANNER = "scanner"


class MailOpen(SQLModel, table=True):
    """Loads of one edition's open pixel per UTC day and verdict (counts only)."""

    __tablename__ = "mail_open"

    issue_number: int = Field(primary_key=True)
    edition: str = Field(primary_key=True, max_length=8)
    day: date = Field(primary_key=True)
    verdict: str = Field(primary_key=True, max_length=16)
    count: int = 0


class ReaderClick(SQLModel, table=True):
    """Per-reader mode only (``NEWSLETTER_PER_READER_ANALYTICS=true``): one row per click of a
    reader who consented (``consent_record`` with ``form="reader_analytics"``, confirmed and not
    withdrawn when the click is written). No address, no client: the subscriber and delivery
    ids, the link and the time. Covered by the GDPR export (subscription admin API) and deleted
    on erasure (``SubscriberErased`` -> ``renderer.erasures``)."""

    __tablename__ = "reader_click"

    id: int | None = Field(default=None, primary_key=True)
    subscriber_id: int = Field(index=True)
    delivery_id: int
    issue_number: int
    edition: str = Field(max_length=8)
    article: int
    link: int
    clicked_at: datetime = created_at_field()
