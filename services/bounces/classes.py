"""Turning an action, a status code and the words around them into one bounce class.

Classes (the ``class`` of ``newsletter bounces classify``):

- ``hard``: the address does not exist or no longer takes mail;
- ``soft``: a temporary condition (mailbox full, retries expired, network), including a
  ``failed`` action with a 4.x.x status and 5.2.2 (RFC 3463: mailbox full is persistent
  transient);
- ``policy``: the receiver refused *us* (block lists, spam, authentication, reputation, most
  5.7.x): never the subscriber's fault;
- ``delayed``: a warning, the MTA still tries; ``unknown``: nothing to go on.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from services.bounces import patterns

# RFC 3463 subjects whose meaning is settled by the code alone.
_HARD_CODES = {"5.1.0", "5.1.1", "5.1.2", "5.1.3", "5.1.4", "5.1.6", "5.1.9", "5.1.10", "5.2.1"}
_SOFT_CODES = {
    "5.2.2",  # mailbox full
    "5.2.3",  # message too large for the mailbox
    "5.3.1",  # mail system full
    "5.3.2",  # system not accepting network messages
    "5.3.4",  # message too big for the system
    "5.4.3",  # routing server failure
    "5.4.5",  # mail system congestion
    "5.4.6",  # routing loop
    "5.4.7",  # delivery time expired
    "5.4.8",
}
_POLICY_CODES = {"5.1.7", "5.1.8"}  # the *sender's* address is refused


class Verdict(NamedTuple):
    bounce_class: str
    reason: str


def _has(pattern: re.Pattern[str], text: str) -> bool:
    return pattern.search(text) is not None


def classify_failure(*, action: str, status: str, text: str) -> Verdict:
    """Class of one recipient's failure; ``text`` is its diagnostic and nearby words."""
    action = action.lower().strip()
    if action == "delayed":
        return Verdict("delayed", f"action delayed, status {status or 'none'}")
    if action in {"delivered", "relayed", "expanded"}:
        return Verdict("unknown", f"not a failure (action {action})")
    if status.startswith("2."):
        return Verdict("unknown", f"not a failure (status {status})")
    if status.startswith("4."):
        return _temporary(status=status, text=text, failed=action == "failed")
    if status.startswith("5."):
        return _permanent(status=status, text=text)
    return _from_words(text)


def _temporary(*, status: str, text: str, failed: bool) -> Verdict:
    if status.startswith("4.7.") and _has(patterns.POLICY, text):
        return Verdict("policy", f"{status} with policy wording")
    if not failed and _has(patterns.DELAYED, text) and not _has(patterns.GIVEN_UP, text):
        return Verdict("delayed", f"{status}, warning wording, no failed action")
    if _has(patterns.MAILBOX_FULL, text):
        return Verdict("soft", f"{status} mailbox full")
    return Verdict("soft", f"{status} is a transient failure" + (" (action failed)" * failed))


def _permanent(*, status: str, text: str) -> Verdict:  # noqa: PLR0911, PLR0912 - a decision table
    if status in _SOFT_CODES or _has(patterns.MAILBOX_FULL, text):
        return Verdict("soft", f"{status} mailbox full or transient condition")
    if status in _POLICY_CODES:
        return Verdict("policy", f"{status} refuses the sender's address")
    if status in _HARD_CODES:
        return Verdict("hard", f"{status} bad destination mailbox or system")
    if status.startswith("5.7."):
        if _has(patterns.NO_SUCH_USER, text) and not _has(patterns.POLICY, text):
            return Verdict("hard", f"{status} with no-such-user wording")
        if _has(patterns.RELAY_DENIED, text):
            return Verdict("hard", f"{status} relaying denied: the domain is not served there")
        return Verdict("policy", f"{status} security or policy refusal")
    if status.startswith("5.6."):
        return Verdict("policy", f"{status} message content refused")
    if _has(patterns.NO_SUCH_USER, text):
        return Verdict("hard", f"{status} with no-such-user wording")
    if _has(patterns.POLICY, text):
        return Verdict("policy", f"{status} with policy wording")
    if _has(patterns.RELAY_DENIED, text):
        return Verdict("hard", f"{status} relaying denied: the domain is not served there")
    if status.startswith("5.4."):
        return Verdict("hard", f"{status} no route to the destination")
    if _has(patterns.TEMPORARY, text):
        return Verdict("soft", f"{status} with temporary-condition wording")
    if status.startswith("5.3."):
        return Verdict("soft", f"{status} the receiving mail system failed, not the address")
    return Verdict("hard", f"{status} permanent failure")


def _from_words(text: str) -> Verdict:  # noqa: PLR0911 - a decision table
    """No status code anywhere: decide on the wording alone."""
    if _has(patterns.DELAYED, text) and not _has(patterns.GIVEN_UP, text):
        return Verdict("delayed", "warning wording, no status code")
    if _has(patterns.MAILBOX_FULL, text):
        return Verdict("soft", "mailbox-full wording, no status code")
    if _has(patterns.NO_SUCH_USER, text):
        return Verdict("hard", "no-such-user wording, no status code")
    if _has(patterns.POLICY, text):
        return Verdict("policy", "policy wording, no status code")
    if _has(patterns.RELAY_DENIED, text):
        return Verdict("hard", "relaying denied, no status code")
    if _has(patterns.TEMPORARY, text):
        return Verdict("soft", "temporary-condition wording, no status code")
    if _has(patterns.PERMANENT, text):
        return Verdict("hard", "permanent-failure wording, no status code")
    return Verdict("unknown", "no status code and no recognizable wording")
