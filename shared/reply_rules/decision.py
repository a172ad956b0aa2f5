"""One class for one failure: the action, the status code and the words of the reply.

Classes:

- ``hard``: positive evidence that the address or its domain does not exist (RFC 3463
  X.1.1, X.1.2, X.1.3, X.1.6, X.1.10, or wording documented for that cause) and no
  sender-side cause named in the same reply;
- ``soft``: the mailbox exists or may come back: mailbox full (RFC 3463 X.2.2 is a
  "persistent transient" failure), mailbox disabled or suspended (X.2.1 "may be
  transient"), retries expired (``failed`` with a 4.x.x status, RFC 3464
  2.3.3/2.3.4), the receiving system's trouble (X.3.x, X.4.x), message too big;
- ``policy``: the receiver refused *us* (X.7.x, X.6.x content, block lists, spam,
  reputation, authentication, rate, relaying refused, a refusal in the server's greeting
  before any recipient was named): never the subscriber's fault;
- ``delayed``: a warning, the MTA still tries (RFC 3464 ``Action: delayed``);
- ``unknown``: a permanent failure with no cause given. RFC 5321 4.2.2 gives 550 for
  "mailbox not found, no access, or command rejected for policy reasons" alike, and RFC 3463
  X.0.0 says only that delivery failed: a bare 550 or 5.0.0 proves nothing about the address,
  so it is neither hard (that would suppress a reader on no evidence) nor policy.

Sender-side wording wins over every other reading, so "550 5.1.1 ... blocked using
Spamhaus" is policy: precision first, a reader is suppressed only on clean evidence.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from shared.reply_rules import evidence as ev
from shared.reply_rules import status_codes

BounceClass = Literal["hard", "soft", "policy", "delayed", "unknown"]

# RFC 3463 (and RFC 7505 for X.1.10): subjects that by themselves say the address or domain
# does not exist. X.1.0, X.1.4, X.1.5 and X.1.9 do not (other, ambiguous, valid, relayed).
_ADDRESS_CODES = {"1.1", "1.2", "1.3", "1.6", "1.10"}
# RFC 3463 X.1.7 / X.1.8: the *sender's* address is bad.
_SENDER_ADDRESS_CODES = {"1.7", "1.8"}
# RFC 3463 X.2.2 mailbox full, X.2.3 message too long, X.2.4 list expansion problem.
_MAILBOX_TRANSIENT = {"2.2", "2.3", "2.4"}


class Verdict(NamedTuple):
    bounce_class: BounceClass
    reason: str


def _detail(status: str) -> str:
    """``"5.1.10"`` -> ``"1.10"`` (subject.detail)."""
    return status.partition(".")[2]


def classify_reply(*, text: str, status: str = "", action: str = "failed") -> Verdict:
    """The class of one recipient's failure.

    ``status`` is the RFC 3463 code (``""`` when none is known; take it from the reply with
    :func:`status_codes.status_of_reply` first), ``text`` the diagnostic and the words
    around it, ``action`` the RFC 3464 action (``failed`` for a synchronous reply).
    """
    action = action.lower().strip()
    if action == "delayed":  # RFC 3464 2.3.3: the MTA keeps trying
        return Verdict("delayed", f"action delayed, status {status or 'none'}")
    if action in {"delivered", "relayed", "expanded"}:  # RFC 3464 2.3.3: not a failure
        return Verdict("unknown", f"not a failure (action {action})")
    if status.startswith("2."):
        return Verdict("unknown", f"not a failure (status {status})")
    if status.startswith("4."):
        return _transient(status, text)
    if status.startswith("5."):
        return _permanent(status, text)
    return _wording_only(text)


def _sender_side(text: str) -> bool:
    return ev.has(ev.SENDER_SIDE, ev.scrubbed(text))


def _transient(status: str, text: str) -> Verdict:
    """RFC 5321 4.2.1 / RFC 3463: a 4.x.x never proves an address is gone."""
    if _sender_side(text):
        return Verdict("policy", f"{status} with sender-side wording (block, spam, auth, rate)")
    if ev.has(ev.MAILBOX_FULL, text):
        return Verdict("soft", f"{status} mailbox full")
    return Verdict("soft", f"{status} is a transient failure")


def _permanent(status: str, text: str) -> Verdict:  # noqa: PLR0911 - a decision table
    detail = _detail(status)
    if _sender_side(text):
        return Verdict("policy", f"{status} with sender-side wording (block, spam, auth, rate)")
    if detail in _SENDER_ADDRESS_CODES:
        return Verdict("policy", f"{status} refuses the sender's address (RFC 3463)")
    if ev.has(ev.REFUSED_AT_GREETING, text) and not ev.has(ev.TEMPORARY, text):
        return Verdict("policy", f"{status} refused in the greeting (RFC 5321 3.1)")
    if detail in _MAILBOX_TRANSIENT or ev.has(ev.MAILBOX_FULL, text):
        return Verdict("soft", f"{status} mailbox full or message too large (RFC 3463)")
    missing = _missing(text)
    if detail in _ADDRESS_CODES:
        return Verdict("hard", f"{status} bad destination address or domain (RFC 3463)")
    if detail == "4.1" and ev.has(ev.EXCHANGE_DBEB, text):
        return Verdict("hard", f"{status} Exchange Online: recipient not in the directory")
    if missing and not _disabled_not_closed(text):
        return Verdict("hard", f"{status} with {missing}")
    if detail == "2.1" or ev.has(ev.ACCOUNT_DISABLED, text):
        # RFC 3463 X.2.1 "mailbox disabled": permanent only "if the mailbox will never be
        # re-enabled"; only wording about a closed account (above) proves that.
        return Verdict("soft", f"{status} mailbox disabled or suspended, not said to be closed")
    if detail.startswith("7."):
        return Verdict("policy", f"{status} security or policy refusal (RFC 3463 X.7)")
    if detail.startswith("6."):
        return Verdict("policy", f"{status} message content refused (RFC 3463 X.6)")
    if detail.startswith(("3.", "4.", "2.")) or ev.has(ev.TEMPORARY, text):
        return Verdict("soft", f"{status} receiving system or network trouble (RFC 3463)")
    return Verdict("unknown", f"{status} permanent failure with no cause given")


def _disabled_not_closed(text: str) -> bool:
    """The reply says the mailbox is disabled, not closed ("invalid mailbox ... account is
    disabled"): the named state outweighs a generic missing-address phrase (RFC 3463 X.2.1)."""
    return ev.has(ev.ACCOUNT_DISABLED, text) and not ev.has(ev.ACCOUNT_GONE, text)


def _missing(text: str) -> str:
    """Which documented wording proves a missing address ("" if none)."""
    if ev.has(ev.ADDRESS_MISSING, text):
        return "address-does-not-exist wording"
    if ev.has(ev.DOMAIN_MISSING, text) and not ev.has(ev.TEMPORARY, text):
        # "Host not found, try again" is a DNS timeout, not a missing domain.
        return "domain-does-not-exist wording"
    if ev.has(ev.MAILBOX_MOVED, text):
        return "user-not-local wording (RFC 5321 551)"
    if ev.has(ev.ACCOUNT_GONE, text) and not ev.has(ev.TEMPORARY, text):
        return "closed-account wording"
    return ""


def _wording_only(text: str) -> Verdict:
    """No status code anywhere: the same order of evidence, on the words alone."""
    if _sender_side(text):
        return Verdict("policy", "sender-side wording, no status code")
    if ev.has(ev.MAILBOX_FULL, text):
        return Verdict("soft", "mailbox-full wording, no status code")
    missing = _missing(text)
    if missing:
        return Verdict("hard", f"{missing}, no status code")
    if ev.has(ev.ACCOUNT_DISABLED, text):
        return Verdict("soft", "disabled-mailbox wording, no status code (RFC 3463 X.2.1)")
    if ev.has(ev.TEMPORARY, text):
        return Verdict("soft", "temporary-condition wording, no status code")
    return Verdict("unknown", "no status code and no recognizable cause")


def classify_smtp_reply(code: int, reply: str) -> Verdict:
    """A synchronous SMTP reply (``550 5.1.1 ...``), classified like a DSN's diagnostic."""
    status = status_codes.status_of_reply(code, reply)
    return classify_reply(text=reply, status=status, action="failed")
