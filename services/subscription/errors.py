"""The subscription service's exceptions, one tree under :class:`SubscriptionError`::

SubscriptionError
├── InvalidAddress        the address fails the address rules (422 on the form)
├── InvalidLinkToken      tampered, malformed, wrong purpose, replayed or for another address
│   └── ExpiredLinkToken  signature good but too old; carries the subscriber id
├── MailQueueUnavailable  the broker did not take a mail command (503, try again)
└── ImportRejected        the CSV file as a whole is unusable (400)
"""

from __future__ import annotations


class SubscriptionError(Exception):
    """Base of every error raised by the subscription service."""


class InvalidAddress(SubscriptionError):
    """The address is not one we accept; ``reason`` is a short, non-sensitive code."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidLinkToken(SubscriptionError):
    """A link token that must change nothing."""


class ExpiredLinkToken(InvalidLinkToken):
    """A confirmation token past its age limit: the page offers a new mail."""

    def __init__(self, subscriber_id: int, email_hash_prefix: str) -> None:
        super().__init__("token expired")
        self.subscriber_id = subscriber_id
        self.email_hash_prefix = email_hash_prefix


class MailQueueUnavailable(SubscriptionError):
    """The mail command could not be published; nothing was promised to the person."""


class ImportRejected(SubscriptionError):
    """The uploaded CSV cannot be read at all (no header, no email column, too big)."""
