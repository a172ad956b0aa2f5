"""The dispatcher's exceptions, one tree.

- :class:`DispatcherError`: base of everything the dispatcher raises on purpose.
  - :class:`PoisonJob`: a job that can never be delivered as it is (undecodable body, unknown
    send or edition, a template that does not build); it ends in the dead-letter queue.
  - :class:`SmtpUnavailable`: no SMTP connection could be opened (refused, timed out).
  - :class:`SendNotFound`: an operator named a send that does not exist.
"""

from __future__ import annotations


class DispatcherError(Exception):
    """Base of the dispatcher's exceptions."""


class PoisonJob(DispatcherError):
    """A job that will fail the same way however often it is tried."""


class SmtpUnavailable(DispatcherError):
    """The SMTP server could not be reached."""


class SendNotFound(DispatcherError):
    """No send has this id."""
