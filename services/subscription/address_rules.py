"""How a typed address becomes the address we store, hash and mail.

The rules, applied in this order:

1. Surrounding whitespace is removed. Anything over 320 characters, or containing a control
   character (CR, LF, NUL, TAB, ...), is refused before any parsing: such input only ever comes
   from attacks and must never reach a mail header.
2. ``email-validator`` checks the syntax with no DNS look-ups (``check_deliverability=False``),
   refusing quoted local parts (``"a b"@example.org``), domain literals (``a@[1.2.3.4]``),
   display names and anything that is not one plain address
   (``alice@example.org)<bob@example.org`` is refused, never split into two). A local part
   over 64 characters is refused too (RFC 5321 section 4.5.3.1.1): email-validator checks
   that only in its strict mode, and a mail server may refuse such a recipient.
3. Internationalized domains (IDN) are accepted and stored in their ASCII form (IDNA A-labels,
   ``пример.бел`` -> ``xn--e1afmkfd.xn--90ais``), so every header and SMTP envelope we write stays
   ASCII. Internationalized *local parts* need SMTPUTF8 end to end, which we do not promise: they
   are refused with a clear message (``allow_smtputf8=False``).
4. The whole address is lower-cased. RFC 5321 lets a local part be case-sensitive, but no
   mailbox provider we know of treats ``Alice`` and ``alice`` as different people, while
   treating them as two subscribers would defeat de-duplication and suppression.
5. Finally the result must match the message schemas' ``SafeAddress`` pattern (defence in
   depth: what we store is exactly what the mail path accepts).

Variants of one inbox (``alice+news@``, ``alice+x@``; on Gmail also ``a.lice@``) stay
separate subscribers: a reader may want one of them filtered, and the address is what they
typed. Only the confirmation-mail limit goes by :func:`mailbox_key`, so the form cannot
mail-bomb one inbox through its subaddresses (``mailbox_slots.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email

from services.subscription.errors import InvalidAddress
from shared.addresses import address_domain, address_hash

MAX_LENGTH = 320
MAX_LOCAL_LENGTH = 64
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SAFE = re.compile(r"^[^\s<>(),;:\"\[\]\\\x00]+@[^\s@<>]+$")


# Domains whose mailboxes ignore dots in the local part (Google's Gmail help: "Dots don't
# matter in Gmail addresses"; googlemail.com is the same service).
_DOTS_IGNORED = frozenset({"gmail.com", "googlemail.com"})


def mailbox_key(email: str) -> str:
    """The inbox a normalized address reaches, for the confirmation-mail limit only.

    A subaddress ``+detail`` is dropped (RFC 5233's ``user+detail``; Gmail, Outlook.com,
    iCloud, Fastmail and Proton deliver it to ``user``, and so does Postfix with the usual
    ``recipient_delimiter = +``), and on Gmail the dots. Two real mailboxes merged by mistake
    share the variants' one mail per interval; their subscriptions are never joined.
    """
    local, _, domain = email.lower().rpartition("@")
    user = local.split("+", 1)[0] or local  # "+tag@" alone has no user part to keep
    if domain in _DOTS_IGNORED:
        user, domain = user.replace(".", "") or user, "gmail.com"
    return f"{user}@{domain}"


def mailbox_hash(email: str) -> str:
    """Hash of :func:`mailbox_key`: the key of the confirmation-mail limit."""
    return address_hash(mailbox_key(email))


def is_variant(email: str) -> bool:
    """Whether ``email`` is a variant of its mailbox (a ``+tag``, Gmail's dots), not the
    mailbox's own address."""
    return mailbox_key(email) != email


@dataclass(frozen=True)
class NormalizedAddress:
    email: str
    domain: str
    email_hash: str

    @property
    def mailbox_hash(self) -> str:
        return mailbox_hash(self.email)

    @property
    def is_variant(self) -> bool:
        return is_variant(self.email)


def normalize_address(raw: str) -> NormalizedAddress:
    """Apply the rules above; raise :class:`InvalidAddress` with a short reason code."""
    candidate = raw.strip()
    if not candidate:
        raise InvalidAddress("empty")
    if len(candidate) > MAX_LENGTH:
        raise InvalidAddress("too_long")
    if _CONTROL.search(candidate):
        raise InvalidAddress("control_character")
    try:
        valid = validate_email(
            candidate,
            check_deliverability=False,
            allow_smtputf8=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_display_name=False,
            allow_empty_local=False,
        )
    except EmailNotValidError as err:
        reason = "non_ascii_local_part" if "Internationalized characters" in str(err) else "syntax"
        raise InvalidAddress(reason) from err
    if len(valid.local_part) > MAX_LOCAL_LENGTH:
        raise InvalidAddress("too_long")
    ascii_domain = valid.ascii_domain or valid.domain
    email = f"{valid.local_part}@{ascii_domain}".lower()
    if len(email) > MAX_LENGTH or not _SAFE.match(email) or not email.isascii():
        raise InvalidAddress("syntax")
    return NormalizedAddress(
        email=email, domain=address_domain(email), email_hash=address_hash(email)
    )
