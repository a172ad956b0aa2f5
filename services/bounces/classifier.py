"""Classify a bounce, complaint or auto-reply: one :class:`Finding` per recipient found.

This is the single code path behind ``newsletter bounces classify`` and every intake (the
SMTP receiver, IMAP polling). The order of reading:

1. an RFC 5965 feedback report is a complaint;
2. RFC 3464 per-recipient blocks give recipient, action, status and diagnostic (only the
   recipients that failed or were delayed, when some were delivered);
3. an Amazon SES bounce or complaint mailed by an SNS e-mail subscription is read as the SES
   webhook reads it;
4. an RFC 3834 auto-reply (or a vacation subject) that is not a bounce is an auto-reply;
5. anything else is read as a non-standard bounce: recipients are the addresses the
   human-readable part names (not our own, not the mailer's), the status is the nearest code.

The VERP token of the bounce's envelope or headers, when present and correctly signed, names
the delivery; the intake then trusts the delivery's address over what the report says.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence

import structlog

from services.bounces import patterns, providers, status_codes
from services.bounces.classes import Verdict, classify_failure
from services.bounces.finding import Finding
from services.bounces.report import ParsedBounce, decoded, parse
from shared import verp
from shared.reply_rules import evidence

log = structlog.get_logger(__name__)

_ADDRESS = re.compile(
    r"(?<![\w.+%-])"
    r"([A-Za-z0-9_][A-Za-z0-9._%+-]{0,63}"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+)"
)
_HEADERISH = re.compile(
    r"^\s*(?:to|from|cc|bcc|subject|sent|date|reply-to|message-id|in-reply-to|references|"
    r"return-path|sender|errors-to|received|x-[\w-]+|list-[\w-]+|reporting-mta|"
    r"received-from-mta)\s*:",
    re.IGNORECASE,
)
_STRONG_CONTEXT = re.compile(
    r"(?:rcpt\s+to|recipient|address|user|mailbox|to)\b[^\n@]{0,40}$|smtp=$|[<\"']$",
    re.IGNORECASE,
)
_SENDER_CONTEXT = re.compile(
    r"\b(?:mail|message|messages|sent|sender)\s+from\s*:?\s*[<\"']?$|\bsender\s*:?\s*[<\"']?$",
    re.IGNORECASE,
)
_HINT_CONTEXT = re.compile(
    r"\b(?:try|contact|write\s+to|forward(?:ed)?\s+to|new\s+address(?:\s+is)?|"
    r"emailing(?:\s+to)?|reach\s+\w+\s+at)\s*:?\s*[<\"']?$",
    re.IGNORECASE,
)
_ROBOT_LOCALS = re.compile(
    r"^(?:mailer-?daemon|postmaster|root|abuse|no-?reply|do-?not-?reply|bounces?(?:\+.*)?|"
    r"unsubscribe\+.*|double-bounce|.*-bounces(?:\+.*)?|owner-.*|.*-owner|.*-request|"
    r".*-admin)$",
    re.IGNORECASE,
)
_REPLY_SUBJECT = re.compile(r"^\s*(?:re|aw|sv|vs|antw|odp|ответ)\s*:", re.IGNORECASE)
# RFC 6430 not-spam, RFC 6591 auth-failure, the ARF draft's "miscategorized".
_FEEDBACK_NOT_COMPLAINT = {"not-spam", "auth-failure", "miscategorized"}
# RFC 6590 (redaction in ARF) and feedback loops that hide the complainer: "redacted@...",
# "xxxxxx@...", "***@...". Such an address names nobody; the intake resolves the delivery
# from our own headers instead.
_REDACTED = re.compile(r"^(?:redacted|[x*#]{3,}|[0-9a-f]{32,})@", re.IGNORECASE)
_VERP_HEADERS = ("To", "Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "X-Rcpt-To")
_DIAGNOSTIC_MAX = 500
_MAX_JSON = 200_000  # an SES notice by mail is a few KB; no report needs more
_RECEIVED_FOR = re.compile(r"\bfor\s+<?([^\s<>;@]+@[^\s<>;]+?)>?\s*;", re.IGNORECASE)
_ACTIONS = {"failure": "failed", "fail": "failed", "delay": "delayed", "error": "failed"}
_SUCCESS_ACTIONS = {"delivered", "relayed", "expanded"}


def classify(
    data: bytes,
    *,
    secret_key: str | None = None,
    envelope_to: Sequence[str] = (),
    own_domains: Iterable[str] = (),
) -> list[Finding]:
    """Read raw message bytes; always returns at least one finding, never raises."""
    try:
        return _classify(
            data, secret_key=secret_key, envelope_to=envelope_to, own_domains=own_domains
        )
    except Exception as err:  # a malformed report must not stop the intake (or loop an MTA)
        log.warning("bounce_unreadable", error=f"{type(err).__name__}: {err}"[:200])
        return [Finding("", "", "", "unknown", f"unreadable report: {type(err).__name__}")]


def _classify(
    data: bytes, *, secret_key: str | None, envelope_to: Sequence[str], own_domains: Iterable[str]
) -> list[Finding]:
    parsed = parse(data)
    delivery_id = _delivery_id(parsed, secret_key=secret_key, envelope_to=envelope_to)
    ours = {d.lower() for d in own_domains} | _own_domains(parsed, envelope_to)
    findings = (
        _complaint(parsed, ours)
        or _from_dsn(parsed, ours)
        or _ses_notification(parsed)
        or _auto_reply(parsed)
        or _non_standard(parsed, ours)
    )
    if delivery_id is not None:
        findings = [_with_delivery(f, delivery_id) for f in findings]
    return findings


def _with_delivery(finding: Finding, delivery_id: int) -> Finding:
    return Finding(**{**finding.to_dict(), "delivery_id": delivery_id})  # type: ignore[arg-type]


def _delivery_id(
    parsed: ParsedBounce, *, secret_key: str | None, envelope_to: Sequence[str]
) -> int | None:
    if not secret_key:
        return None
    candidates = list(envelope_to)
    for name in _VERP_HEADERS:
        candidates.extend(decoded(v) for v in parsed.message.get_all(name) or [])
    if parsed.original is not None:
        candidates.extend(decoded(v) for v in parsed.original.get_all("Return-Path") or [])
    for candidate in candidates:
        for address in _ADDRESS.findall(candidate):
            found = verp.delivery_from_return_path(secret_key=secret_key, address=address)
            if found is not None:
                return found
    return None


def _own_domains(parsed: ParsedBounce, envelope_to: Sequence[str]) -> set[str]:
    """Domains of our own addresses: the bounce was sent to them, so they are not recipients."""
    ours: set[str] = set()
    values = [*envelope_to, parsed.header("To"), parsed.header("Delivered-To")]
    if parsed.original is not None:
        values.append(decoded(parsed.original.get("Return-Path", "")))
        # The returned message's author and sender are us (the list's From address).
        values += [decoded(parsed.original.get(h, "")) for h in ("From", "Sender")]
    for value in values:
        for address in _ADDRESS.findall(value):
            ours.add(address.lower())
            local, _, domain = address.rpartition("@")
            if local.lower().startswith(("bounces+", "bounce", "unsubscribe+")):
                ours.add(domain.lower())
    return ours


def _is_candidate(address: str, ours: set[str]) -> bool:
    local, _, domain = address.rpartition("@")
    return (
        not _ROBOT_LOCALS.match(local)
        and domain.lower() not in ours
        and address.lower() not in ours
    )


def _complaint(parsed: ParsedBounce, ours: set[str]) -> list[Finding]:
    """RFC 5965 ARF (its feedback part anywhere in the tree), or a feedback loop that sends
    the reported message without one (Microsoft JMRP, AOL's and Yahoo's older formats)."""
    feedback = parsed.feedback
    if feedback is None:
        if not _is_feedback_loop(parsed):
            return []
        feedback = {}
        reason = "feedback-loop complaint without an RFC 5965 report part"
    else:
        reason = ""
    feedback_type = feedback.get("feedback-type", "").strip().lower()
    # RFC 5965 3.1 / 7.3: abuse, fraud, other, virus are complaints; RFC 6430's not-spam
    # and RFC 6591's auth-failure are not. A report that names no type is read as abuse.
    bounce_class = "unknown" if feedback_type in _FEEDBACK_NOT_COMPLAINT else "complaint"
    reason = reason or f"ARF feedback report, feedback-type {feedback_type or 'missing'}"
    recipients = _complaint_recipients(parsed, feedback, ours)
    diagnostic = (feedback.get("user-agent", "") + " " + feedback.get("source-ip", "")).strip()
    return [
        Finding(
            r,
            "",
            "",
            bounce_class,
            reason,
            diagnostic,
            kind="complaint",
            feedback_type=feedback_type,
        )
        for r in _unique(recipients or [""])
    ]


def _complaint_recipients(
    parsed: ParsedBounce, feedback: dict[str, str], ours: set[str]
) -> list[str]:
    """RFC 5965 3.2 Original-Rcpt-To (and Removal-Recipient), else Microsoft JMRP's
    X-HmXmrOriginalRecipient, else the To of the returned message or headers."""
    found = [
        a
        for key in ("original-rcpt-to", "removal-recipient")
        for a in _ADDRESS.findall(feedback.get(key, ""))
        if _is_candidate(a, ours) and not _REDACTED.match(a)
    ]
    original = parsed.original
    if found or original is None:
        return found
    for name in ("X-HmXmrOriginalRecipient", "To", "Delivered-To", "X-Original-To"):
        found = [
            a
            for a in _ADDRESS.findall(decoded(original.get(name, "")))
            if _is_candidate(a, ours) and not _REDACTED.match(a)
        ]
        if found:
            return found[:1] if name == "To" and len(found) > 1 else found
    return []


def _is_feedback_loop(parsed: ParsedBounce) -> bool:
    """A complaint without a ``message/feedback-report`` part: Microsoft JMRP (the message
    attached, X-HmXmrOriginalRecipient in it), AOL's and Yahoo's feedback-loop mails
    ("Email Feedback Report", "abuse report", "complaint about message from")."""
    if parsed.original is not None and parsed.original.get("X-HmXmrOriginalRecipient"):
        return True
    if _is_robot_report(parsed) and parsed.dsn:
        return False
    report_type = parsed.message.get_param("report-type", header="content-type")
    if isinstance(report_type, str) and report_type.lower() == "feedback-report":
        return True
    return bool(
        patterns.FEEDBACK_LOOP_SUBJECT.search(parsed.subject)
        and (parsed.original is not None or patterns.FEEDBACK_LOOP_BODY.search(parsed.human_text))
    )


def _from_dsn(parsed: ParsedBounce, ours: set[str]) -> list[Finding]:
    findings: list[Finding] = []
    paragraphs = re.split(r"\n\s*\n", parsed.human_text.lower()) if parsed.dsn else []
    for fields in parsed.dsn:
        recipient = _preferred_recipient(fields.original_recipient, fields.recipient)
        if recipient and not _is_candidate(recipient, ours):
            continue
        diagnostic = " ".join(fields.diagnostic.split())
        status_text = " ".join(fields.status.split())
        status = status_codes.more_specific(
            status_codes.normalize(status_text), status_codes.find_enhanced(diagnostic)
        )
        if not status:
            basic = status_codes.find_basic(status_text) or status_codes.find_basic(diagnostic)
            status = status_codes.from_basic(basic)
        if status_text and not status_text[:1].isdigit():
            status_text = ""
        diagnostic = diagnostic or status_text
        action = _ACTIONS.get(fields.action, fields.action) or (
            "failed" if status.startswith(("4", "5")) else ""
        )
        # The human part may say what the diagnostic does not (Postfix "host ... refused to
        # talk to me: 554 ..."): the paragraph naming this recipient, else all of it.
        about = _paragraph_about(paragraphs, recipient)
        short = len(diagnostic.split()) <= 3
        text = f"{diagnostic}\n{about or parsed.human_text}" if short else diagnostic
        verdict = classify_failure(action=action, status=status, text=text)
        if _weak(verdict) and about and not short:
            verdict = classify_failure(action=action, status=status, text=f"{text}\n{about}")
        findings.append(
            Finding(
                recipient,
                status,
                action,
                verdict.bounce_class,
                f"DSN: {verdict.reason}",
                diagnostic[:_DIAGNOSTIC_MAX],
                kind="dsn",
            )
        )
    failed = [f for f in findings if f.action not in _SUCCESS_ACTIONS]
    # RFC 3464 2.3.3: a recipient delivered, relayed or expanded did not fail; a report about
    # several recipients names only those that did (all of them, if none failed).
    return _dedupe(failed or findings)


def _paragraph_about(paragraphs: Sequence[str], recipient: str) -> str:
    """The paragraphs (lower-cased) of a report's human part that name ``recipient``."""
    needle = recipient.lower()
    return "\n".join(p for p in paragraphs if needle in p) if needle else ""


def _ses_notification(parsed: ParsedBounce) -> list[Finding]:
    """An Amazon SES bounce or complaint mailed by an SNS e-mail subscription: the body is the
    SES event's JSON (protocol ``email``, then a footer) or the SNS envelope around it
    (``email-json``, the event in ``Message``). Read as the SES webhook reads it."""
    text = parsed.human_text
    start = text.find("{")
    if start < 0 or start > 200 or len(text) > _MAX_JSON:
        return []
    try:
        event, _ = json.JSONDecoder().raw_decode(text, start)
        if isinstance(event, dict) and event.get("Type") == "Notification":
            event = json.loads(str(event.get("Message") or ""))
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
        return []
    if not isinstance(event, dict) or event.get("notificationType") not in {"Bounce", "Complaint"}:
        return []
    return [notice.finding for notice in providers.ses_notices(event)]


def _preferred_recipient(original: str, final: str) -> str:
    """The address we sent to: Original-Recipient when it is a real address, else Final."""
    if "@" in original and "." in original.rpartition("@")[2]:
        return original
    return final if "@" in final else original


def _looks_like_bounce(parsed: ParsedBounce) -> bool:
    return bool(
        parsed.dsn
        or patterns.BOUNCE_SENDER.search(parsed.sender)
        or patterns.BOUNCE_SUBJECT.search(parsed.subject)
        or parsed.message.get_content_type() == "multipart/report"
        or patterns.MTA_TEMPLATE.search(parsed.human_text[:3000])
        or (
            parsed.header("Return-Path").strip() in {"<>", ""}
            and patterns.PERMANENT.search(parsed.human_text)
        )
    )


def _is_robot_report(parsed: ParsedBounce) -> bool:
    """Sent by a mail system (not a person's mailbox), or shaped as a report."""
    return bool(
        parsed.dsn
        or patterns.BOUNCE_SENDER.search(parsed.sender)
        or parsed.message.get_content_type() == "multipart/report"
    )


def _auto_reply(parsed: ParsedBounce) -> list[Finding]:
    auto_submitted = parsed.header("Auto-Submitted").lower()
    precedence = parsed.header("Precedence").lower()
    replied = (
        auto_submitted.startswith(("auto-replied", "auto-generated", "auto-notified"))
        or bool(parsed.header("X-Autoreply") or parsed.header("X-Autorespond"))
        or precedence == "auto_reply"
        or bool(patterns.AUTO_REPLY_SUBJECT.search(parsed.subject))
        or bool(patterns.AUTO_REPLY_BODY.search(parsed.human_text[:600]))
    )
    if not replied or _is_robot_report(parsed):
        return []
    prefixed = bool(patterns.AUTO_REPLY_PREFIX.match(parsed.subject))
    if _looks_like_bounce(parsed) and not (prefixed or auto_submitted.startswith("auto-replied")):
        return []
    senders = _ADDRESS.findall(parsed.sender)
    reason = "RFC 3834 auto-reply" if auto_submitted else "auto-reply subject or header"
    return [Finding(senders[0] if senders else "", "", "", "auto-reply", reason, kind="auto-reply")]


def _candidates(text: str, ours: set[str]) -> list[tuple[str, int]]:
    """Addresses the human text names, with their offsets; the most telling ones only."""
    strong: list[tuple[str, int]] = []
    weak: list[tuple[str, int]] = []
    headerish: list[tuple[str, int]] = []
    for match in _ADDRESS.finditer(text):
        address = match.group(1).rstrip(".")
        if not _is_candidate(address, ours):
            continue
        line_start = text.rfind("\n", 0, match.start()) + 1
        before = text[line_start : match.start()]
        if _SENDER_CONTEXT.search(before):
            continue  # "not accepting mail from <us>": the sender, not a recipient
        if _HINT_CONTEXT.search(before):
            continue  # "please try <new address>": a hint, not the failed recipient
        if _HEADERISH.match(text[line_start : line_start + 40]):
            headerish.append((address, match.start()))
        elif not before.strip() or _STRONG_CONTEXT.search(before):
            strong.append((address, match.start()))
        else:
            weak.append((address, match.start()))
    return strong or weak or headerish


def _non_standard(parsed: ParsedBounce, ours: set[str]) -> list[Finding]:
    text = parsed.human_text
    candidates = _failed_recipients_header(parsed, text, ours) or _candidates(text, ours)
    if not candidates and parsed.original is not None and _looks_like_bounce(parsed):
        candidates = [(a, -1) for a in _original_recipients(parsed) if _is_candidate(a, ours)]
    if _human_reply(parsed) or (
        not _looks_like_bounce(parsed) and not _plausible_bounce_text(text)
    ):
        return [Finding("", "", "", "unknown", "not a bounce, complaint or auto-reply")]
    if not candidates:
        verdict = _verdict(text, text, parsed)
        return [Finding("", *verdict[:2], verdict[2], f"no recipient found; {verdict[3]}")]
    findings: list[Finding] = []
    for address, offset in _unique_pairs(candidates):
        following = [o for a, o in candidates if o > offset and a.lower() != address.lower()]
        end = following[0] if following else len(text)
        context = text[max(offset, 0) : end] if offset >= 0 else text
        status, action, bounce_class, reason = _verdict(context, text, parsed)
        diagnostic = " ".join(context.split())[:_DIAGNOSTIC_MAX]
        findings.append(Finding(address, status, action, bounce_class, reason, diagnostic))
    return _dedupe(findings)


def _failed_recipients_header(
    parsed: ParsedBounce, text: str, ours: set[str]
) -> list[tuple[str, int]]:
    """Exim and others name the failed addresses in ``X-Failed-Recipients``."""
    found: list[tuple[str, int]] = []
    for value in parsed.message.get_all("X-Failed-Recipients") or []:
        for address in _ADDRESS.findall(decoded(value)):
            if _is_candidate(address, ours):
                found.append((address, text.lower().find(address.lower())))
    return found


def _original_recipients(parsed: ParsedBounce) -> list[str]:
    """Who the returned message was for: the receiving MTA's ``for <...>``, else its To."""
    original = parsed.original
    if original is None:
        return []
    for received in original.get_all("Received") or []:
        match = _RECEIVED_FOR.search(decoded(received))
        if match:
            return [match.group(1)]
    return _ADDRESS.findall(decoded(original.get("To", "")))[:1]


def _human_reply(parsed: ParsedBounce) -> bool:
    """A person answering a mail ("Re: ...") that merely talks about a failed delivery."""
    return bool(
        _REPLY_SUBJECT.match(parsed.subject)
        and not _is_robot_report(parsed)
        and not patterns.BOUNCE_SUBJECT.search(parsed.subject)
        and not status_codes.find_failure(parsed.human_text)
    )


def _plausible_bounce_text(text: str) -> bool:
    return bool(
        patterns.PERMANENT.search(text)
        or patterns.MTA_TEMPLATE.search(text)
        or evidence.ADDRESS_MISSING.search(text)
    )


def _verdict(context: str, whole: str, parsed: ParsedBounce) -> tuple[str, str, str, str]:
    """(status, action, class, reason) of a non-standard bounce, from nearest to broadest text."""
    status = _status_in(context) or _status_in(whole)
    warning = bool(
        (patterns.DELAYED.search(whole) or patterns.DELAYED.search(parsed.subject))
        and not patterns.GIVEN_UP.search(whole)
    )
    action = "delayed" if warning and not status.startswith("5") else "failed"
    verdict = classify_failure(action=action, status=status, text=context)
    if _weak(verdict) and context is not whole:
        verdict = classify_failure(action=action, status=status, text=f"{context}\n{whole}")
    return status, action, verdict.bounce_class, f"non-standard: {verdict.reason}"


def _weak(verdict: Verdict) -> bool:
    return verdict.bounce_class == "unknown"


def _status_in(text: str) -> str:
    enhanced = status_codes.find_failure(text)
    # A transcript ("250 2.1.5 Recipient OK", then "550 5.7.1 ...") quotes successes before
    # the failure: the failing reply is the report's status (RFC 5321 4.2.1).
    basic = status_codes.find_basic_failure(text) or status_codes.find_basic(text)
    if enhanced and (basic is None or str(basic)[0] == enhanced[0]):
        return enhanced
    return status_codes.more_specific(status_codes.from_basic(basic), enhanced)


def _unique(items: Iterable[str]) -> list[str]:
    seen: dict[str, str] = {}
    for item in items:
        seen.setdefault(item.lower(), item)
    return list(seen.values())


def _unique_pairs(pairs: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    seen: dict[str, tuple[str, int]] = {}
    for address, offset in pairs:
        seen.setdefault(address.lower(), (address, offset))
    return list(seen.values())


def _dedupe(findings: list[Finding]) -> list[Finding]:
    """One finding per recipient; the most severe reading wins over a vaguer one."""
    rank = {"hard": 0, "complaint": 0, "policy": 1, "soft": 2, "delayed": 3, "auto-reply": 4}
    best: dict[str, Finding] = {}
    for finding in findings:
        key = finding.recipient.lower()
        current = best.get(key)
        if current is None or rank.get(finding.bounce_class, 9) < rank.get(current.bounce_class, 9):
            best[key] = finding
    return list(best.values())
