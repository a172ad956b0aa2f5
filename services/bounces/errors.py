"""The exception tree of the bounce intake.

::

    BounceError                  base of everything raised here
    +-- SignatureInvalid         an SNS notice whose signature or certificate does not check out
    +-- WebhookRejected          a webhook body that is not a notice we understand
    +-- IntakeUnavailable        the broker did not take an event: the sender should retry
"""

from __future__ import annotations


class BounceError(Exception):
    """Base of the bounce intake's errors."""


class SignatureInvalid(BounceError):
    """An Amazon SNS message failed signature verification."""


class WebhookRejected(BounceError):
    """A webhook body is malformed or of a type we do not handle."""


class IntakeUnavailable(BounceError):
    """Publishing the normalized event failed; the intake answers with a temporary error."""
