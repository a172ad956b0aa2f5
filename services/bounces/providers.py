"""JSON bounce and complaint notices of email providers, read into :class:`Finding` objects.

Amazon SES (inside an SNS notification), Postmark and SendGrid each name the recipient, a
type and usually an SMTP status and diagnostic; the status and diagnostic go through the same
:func:`classify_failure` as mail bounces, and the provider's own type settles what they cannot.
The VERP return path (SES ``mail.source``) or a ``delivery_id`` custom field names the delivery.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.bounces import status_codes
from services.bounces.classes import classify_failure
from services.bounces.classifier import Finding
from services.bounces.errors import WebhookRejected
from shared import verp


@dataclass(frozen=True)
class Notice:
    """One finding and the provider's id for it (the idempotency evidence)."""

    finding: Finding
    evidence: str
    unsubscribe: bool = False


def _int(value: object) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def _from_status(*, status: str, diagnostic: str, action: str = "failed") -> tuple[str, str, str]:
    code = status_codes.normalize(status) or status_codes.find_enhanced(diagnostic)
    if not code:
        code = status_codes.from_basic(status_codes.find_basic(diagnostic))
    verdict = classify_failure(action=action, status=code, text=diagnostic)
    return code, verdict.bounce_class, verdict.reason


# ---- Amazon SES ---------------------------------------------------------------------------

_SES_HARD_SUBTYPES = {"noemail", "suppressed", "onaccountsuppressionlist", "general"}
_SES_POLICY_SUBTYPES = {"contentrejected", "attachmentrejected"}


def ses_notices(notification: Mapping[str, Any], *, secret_key: str) -> list[Notice]:
    """An SES event (the JSON inside an SNS ``Message``)."""
    kind = str(notification.get("notificationType") or notification.get("eventType") or "")
    mail = notification.get("mail") or {}
    delivery_id = verp.delivery_from_return_path(
        secret_key=secret_key, address=str(mail.get("source", ""))
    )
    if kind == "Bounce":
        bounce = notification.get("bounce") or {}
        return [
            _ses_bounce(bounce, recipient, delivery_id)
            for recipient in bounce.get("bouncedRecipients") or []
        ]
    if kind == "Complaint":
        complaint = notification.get("complaint") or {}
        feedback = str(complaint.get("complaintFeedbackType") or "abuse")
        bounce_class = "unknown" if feedback == "not-spam" else "complaint"
        return [
            Notice(
                Finding(
                    str(r.get("emailAddress", "")),
                    "",
                    "",
                    bounce_class,
                    f"SES complaint, feedback type {feedback}",
                    str(complaint.get("userAgent") or ""),
                    delivery_id,
                    kind="complaint",
                ),
                f"ses:{complaint.get('feedbackId', '')}",
            )
            for r in complaint.get("complainedRecipients") or []
        ]
    if kind in {"Delivery", "Send", "Open", "Click", "DeliveryDelay", "Reject"}:
        return []
    raise WebhookRejected(f"unknown SES notification type {kind!r}")


def _ses_bounce(
    bounce: Mapping[str, Any], recipient: Mapping[str, Any], delivery_id: int | None
) -> Notice:
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
    return Notice(
        Finding(
            str(recipient.get("emailAddress", "")),
            status,
            str(recipient.get("action") or "failed"),
            bounce_class,
            reason,
            diagnostic[:500],
            delivery_id,
        ),
        f"ses:{bounce.get('feedbackId', '')}",
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
    metadata = body.get("Metadata") or {}
    delivery_id = _int(metadata.get("delivery_id")) if isinstance(metadata, Mapping) else None
    evidence = f"postmark:{body.get('ID', '')}"
    if kind == "Unsubscribe":
        return [Notice(Finding(email, "", "", "unknown", "Postmark unsubscribe"), evidence, True)]
    details = str(body.get("Details") or body.get("Description") or "")
    status, bounce_class, reason = _from_status(status="", diagnostic=details)
    mapped = _POSTMARK_TYPES.get(kind)
    if mapped is not None and not (mapped == "hard" and bounce_class == "policy"):
        bounce_class, reason = mapped, f"Postmark {kind}"
    return [
        Notice(
            Finding(email, status, "failed", bounce_class, reason, details[:500], delivery_id),
            evidence,
        )
    ]


# ---- SendGrid -----------------------------------------------------------------------------


def sendgrid_notices(events: list[Mapping[str, Any]]) -> list[Notice]:
    notices: list[Notice] = []
    for event in events:
        kind = str(event.get("event", ""))
        email = str(event.get("email", ""))
        delivery_id = _int(event.get("delivery_id"))
        evidence = f"sendgrid:{event.get('sg_event_id', '')}"
        reason_text = str(event.get("reason") or event.get("response") or "")
        if kind in {"unsubscribe", "group_unsubscribe"}:
            finding = Finding(email, "", "", "unknown", f"SendGrid {kind}", "", delivery_id)
            notices.append(Notice(finding, evidence, unsubscribe=True))
            continue
        if kind == "spamreport":
            finding = Finding(email, "", "", "complaint", "SendGrid spam report", "", delivery_id)
        elif kind == "deferred":
            status, _, _ = _from_status(status="", diagnostic=reason_text, action="delayed")
            finding = Finding(
                email, status, "delayed", "delayed", "SendGrid deferred", reason_text, delivery_id
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
            finding = Finding(
                email, status, "failed", bounce_class, reason, reason_text[:500], delivery_id
            )
        else:
            continue
        notices.append(Notice(finding, evidence))
    return notices
