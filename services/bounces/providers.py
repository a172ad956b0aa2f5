"""JSON bounce and complaint notices of email providers, read into :class:`Finding` objects.

Amazon SES (inside an SNS notification), Postmark and SendGrid each name the recipient, a
type and usually an SMTP status and diagnostic; the status and diagnostic go through the same
:func:`classify_failure` as mail bounces, and the provider's own type settles what they cannot.
What may name the delivery is collected, not trusted here: the VERP return path (SES
``mail.source``), the Message-ID the mail was sent with (SES ``mail.commonHeaders`` /
``mail.headers``, SendGrid ``smtp-id``, Postmark's bounce ``Content``), and a caller-supplied
``delivery_id`` (SendGrid custom argument, Postmark ``Metadata``). The intake checks them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services.bounces import status_codes
from services.bounces.classes import classify_failure
from services.bounces.errors import WebhookRejected
from services.bounces.finding import Finding
from services.bounces.limits import bounded_id
from services.bounces.references import find_references

_REFERENCE = re.compile(r"^\d{1,18}-[0-9a-fA-F]{16}$")
_ANGLE = re.compile(r"<[^<>\s]{1,300}>")
_MAX_CONTENT = 200_000


@dataclass(frozen=True)
class Notice:
    """One finding, the provider's id for it (the idempotency evidence), what names the mail."""

    finding: Finding
    evidence: str
    unsubscribe: bool = False
    message_ids: tuple[str, ...] = ()
    return_paths: tuple[str, ...] = ()
    claimed: str = ""  # a caller-supplied delivery id: digits, or a signed reference


def claimed_delivery(value: object) -> str:
    """A caller-supplied delivery id as text; a number beyond 63 bits is a 400, junk is ""."""
    if isinstance(value, str) and _REFERENCE.match(value.strip()):
        return value.strip().lower()
    number = bounded_id(value)
    return "" if number is None else str(number)


def _message_ids(*values: object) -> tuple[str, ...]:
    found: list[str] = []
    for value in values:
        if isinstance(value, str):
            found.extend(_ANGLE.findall(value[:2000]) or ([f"<{value.strip()}>"] if value else []))
    return tuple(dict.fromkeys(found))[:10]


def _finding(
    recipient: str,
    bounce_class: str,
    reason: str,
    *,
    status: str = "",
    action: str = "",
    diagnostic: str = "",
    kind: str = "bounce",
) -> Finding:
    """A :class:`Finding` built by keyword (its field order belongs to the classifier)."""
    return Finding(
        recipient=recipient[:320],
        status=status,
        action=action,
        bounce_class=bounce_class,
        reason=reason,
        diagnostic=diagnostic,
        kind=kind,
    )


def _from_status(*, status: str, diagnostic: str, action: str = "failed") -> tuple[str, str, str]:
    code = status_codes.normalize(status) or status_codes.find_enhanced(diagnostic)
    if not code:
        code = status_codes.from_basic(status_codes.find_basic(diagnostic))
    verdict = classify_failure(action=action, status=code, text=diagnostic)
    return code, verdict.bounce_class, verdict.reason


# ---- Amazon SES ---------------------------------------------------------------------------

_SES_HARD_SUBTYPES = {"noemail", "suppressed", "onaccountsuppressionlist", "general"}
_SES_POLICY_SUBTYPES = {"contentrejected", "attachmentrejected"}


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _ses_mail(mail: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(Message-IDs, return paths) of the mail an SES event is about."""
    common = _mapping(mail.get("commonHeaders"))
    headers = [h for h in _list(mail.get("headers"))[:200] if isinstance(h, Mapping)]

    def named(name: str) -> list[object]:
        return [h.get("value") for h in headers if str(h.get("name", "")).lower() == name]

    quoted = named("message-id")
    sources = [mail.get("source"), *named("return-path")]
    paths = tuple(str(p) for p in sources if isinstance(p, str) and p)
    return _message_ids(common.get("messageId"), *quoted), paths


def ses_notices(notification: Mapping[str, Any]) -> list[Notice]:
    """An SES event (the JSON inside an SNS ``Message``)."""
    kind = str(notification.get("notificationType") or notification.get("eventType") or "")
    mail = _mapping(notification.get("mail"))
    message_ids, paths = _ses_mail(mail)
    if kind == "Bounce":
        bounce = _mapping(notification.get("bounce"))
        return [
            Notice(
                _ses_bounce(bounce, _mapping(recipient)),
                f"ses:{bounce.get('feedbackId', '')}",
                message_ids=message_ids,
                return_paths=paths,
            )
            for recipient in _list(bounce.get("bouncedRecipients"))
        ]
    if kind == "Complaint":
        complaint = _mapping(notification.get("complaint"))
        feedback = str(complaint.get("complaintFeedbackType") or "abuse")
        bounce_class = "unknown" if feedback == "not-spam" else "complaint"
        return [
            Notice(
                _finding(
                    str(r.get("emailAddress", "")),
                    bounce_class,
                    f"SES complaint, feedback type {feedback}",
                    diagnostic=str(complaint.get("userAgent") or ""),
                    kind="complaint",
                ),
                f"ses:{complaint.get('feedbackId', '')}",
                message_ids=message_ids,
                return_paths=paths,
            )
            for r in map(_mapping, _list(complaint.get("complainedRecipients")))
        ]
    if kind in {"Delivery", "Send", "Open", "Click", "DeliveryDelay", "Reject"}:
        return []
    raise WebhookRejected(f"unknown SES notification type {kind!r}")


def _list(value: object) -> list[Any]:
    return value[:1000] if isinstance(value, list) else []


def _ses_bounce(bounce: Mapping[str, Any], recipient: Mapping[str, Any]) -> Finding:
    bounce_type = str(bounce.get("bounceType", ""))
    subtype = str(bounce.get("bounceSubType", "")).lower()
    diagnostic = str(recipient.get("diagnosticCode") or "")
    status, bounce_class, reason = _from_status(
        status=str(recipient.get("status") or ""), diagnostic=diagnostic
    )
    if bounce_type == "Permanent" and subtype in _SES_HARD_SUBTYPES and bounce_class != "policy":
        bounce_class, reason = "hard", f"SES permanent bounce ({subtype})"
    elif subtype == "mailboxfull":
        bounce_class, reason = "soft", "SES mailbox full"
    elif subtype in _SES_POLICY_SUBTYPES:
        bounce_class, reason = "policy", f"SES {subtype}"
    elif bounce_type == "Transient" and bounce_class in {"hard", "unknown"}:
        bounce_class, reason = "soft", f"SES transient bounce ({subtype})"
    return _finding(
        str(recipient.get("emailAddress", "")),
        bounce_class,
        reason,
        status=status,
        action=str(recipient.get("action") or "failed"),
        diagnostic=diagnostic[:500],
    )


# ---- Postmark -----------------------------------------------------------------------------

_POSTMARK_TYPES = {
    "HardBounce": "hard",
    "BadEmailAddress": "hard",
    "ManuallyDeactivated": "hard",
    "SoftBounce": "soft",
    "Transient": "soft",
    "DnsError": "soft",
    "Blocked": "policy",
    "DMARCPolicy": "policy",
    "SpamNotification": "policy",
    "VirusNotification": "policy",
    "SpamComplaint": "complaint",
    "AutoResponder": "auto-reply",
}


def postmark_notices(body: Mapping[str, Any]) -> list[Notice]:
    record = str(body.get("RecordType", ""))
    if record not in {"Bounce", "SpamComplaint"}:
        return []
    kind = str(body.get("Type", "SpamComplaint" if record == "SpamComplaint" else ""))
    email = str(body.get("Email", ""))
    # Metadata keys come from our ``X-PM-Metadata-delivery_id`` header; header names are
    # case-insensitive (RFC 5322 1.2.2), so a relay may have re-cased it: match likewise.
    metadata = {str(k).lower(): v for k, v in _mapping(body.get("Metadata")).items()}
    claimed = claimed_delivery(metadata.get("delivery_id"))
    evidence = f"postmark:{str(body.get('ID', ''))[:100]}"
    content = body.get("Content")
    message_ids: tuple[str, ...] = ()
    if isinstance(content, str) and content:  # the raw bounce, when the webhook includes it
        message_ids = find_references(content[:_MAX_CONTENT].encode("utf-8", "replace")).message_ids
    if kind == "Unsubscribe":
        finding = _finding(email, "unknown", "Postmark unsubscribe")
        return [Notice(finding, evidence, True, message_ids, claimed=claimed)]
    details = str(body.get("Details") or body.get("Description") or "")
    status, bounce_class, reason = _from_status(status="", diagnostic=details)
    mapped = _POSTMARK_TYPES.get(kind)
    if mapped is not None and not (mapped == "hard" and bounce_class == "policy"):
        bounce_class, reason = mapped, f"Postmark {kind}"
    return [
        Notice(
            _finding(
                email,
                bounce_class,
                reason,
                status=status,
                action="failed",
                diagnostic=details[:500],
            ),
            evidence,
            message_ids=message_ids,
            claimed=claimed,
        )
    ]


# ---- SendGrid -----------------------------------------------------------------------------


def sendgrid_notices(events: Sequence[Mapping[str, Any]]) -> list[Notice]:
    notices: list[Notice] = []
    for event in events:
        kind = str(event.get("event", ""))
        email = str(event.get("email", ""))
        claimed = claimed_delivery(event.get("delivery_id"))
        message_ids = _message_ids(event.get("smtp-id"))
        evidence = f"sendgrid:{str(event.get('sg_event_id', ''))[:100]}"
        reason_text = str(event.get("reason") or event.get("response") or "")
        if kind in {"unsubscribe", "group_unsubscribe"}:
            finding = _finding(email, "unknown", f"SendGrid {kind}")
            notices.append(Notice(finding, evidence, True, message_ids, claimed=claimed))
            continue
        if kind == "spamreport":
            finding = _finding(email, "complaint", "SendGrid spam report", kind="complaint")
        elif kind == "deferred":
            status, _, _ = _from_status(status="", diagnostic=reason_text, action="delayed")
            finding = _finding(
                email,
                "delayed",
                "SendGrid deferred",
                status=status,
                action="delayed",
                diagnostic=reason_text[:500],
            )
        elif kind in {"bounce", "dropped"}:
            status, bounce_class, reason = _from_status(
                status=str(event.get("status") or ""), diagnostic=reason_text
            )
            if (
                event.get("type") == "blocked"
                and bounce_class == "hard"
                and not status.startswith("5.1.")
            ):
                bounce_class, reason = "policy", "SendGrid blocked"
            if kind == "dropped":
                bounce_class, reason = "unknown", f"SendGrid dropped: {reason_text[:80]}"
            finding = _finding(
                email,
                bounce_class,
                reason,
                status=status,
                action="failed",
                diagnostic=reason_text[:500],
            )
        else:
            continue
        notices.append(Notice(finding, evidence, message_ids=message_ids, claimed=claimed))
    return notices
