"""The exception tree of the bounce intake.

::

    BounceError                  base of everything raised here
    +-- Unauthenticated          a webhook request without valid credentials (401)
    |   +-- SignatureInvalid     an SNS or SendGrid signature that does not check out
    +-- RateLimited              one source reported more than its share this minute (429)
    +-- WebhookRejected          a webhook body that is not a notice we understand (400)
    |   +-- BodyTooLarge         a webhook body over the size limit (413)
    +-- IntakeUnavailable        the broker did not take an event: the sender should retry
"""

from __future__ import annotations


class BounceError(Exception):
    """Base of the bounce intake's errors."""


class Unauthenticated(BounceError):
    """A webhook request carries no valid credential for its provider."""


class SignatureInvalid(Unauthenticated):
    """An Amazon SNS message or a SendGrid event batch failed signature verification."""


class RateLimited(BounceError):
    """A source (client IP or provider) is over its reports-per-minute limit."""


class WebhookRejected(BounceError):
    """A webhook body is malformed or of a type we do not handle."""


class BodyTooLarge(WebhookRejected):
    """A webhook body is larger than ``NEWSLETTER_BOUNCES_WEBHOOK_MAX_BYTES``."""


class IntakeUnavailable(BounceError):
    """Publishing the normalized event failed; the intake answers with a temporary error."""
