"""``newsletter send status``: a send's progress as an editor reads it, one line per edition.

Per edition: planned, sent, deferred, failed, bounced, the rest, the percentage done, the
current rate and the time left; then the top deferral and failure reasons (SMTP replies
grouped, with counts and the domains that gave them), and why deliveries were not sent on
purpose (unsubscribed since the planning, a cadence changed since). A send still being planned says
"planning…" rather than showing zeros; a test send says it is one.
"""

from __future__ import annotations

from shared.send_progress import (
    FAILURE_STATUSES,
    NOT_SENT_STATUSES,
    LanguageProgress,
    SendProgress,
)

COLUMNS = ("planned", "sent", "deferred", "failed", "bounced", "other", "done", "rate", "left")
_OPEN = ("pending", "queued", "sending")
_SHOWN = ("sent", "deferred", "failed", "bounced")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "stalled"
    if seconds == 0:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def rate(per_s: float) -> str:
    return f"{per_s:.1f}/s" if per_s < 100 else f"{per_s:.0f}/s"


def _row(lang: LanguageProgress, *, moving: bool) -> str:
    other = lang.total - lang.count(*_SHOWN)
    cells = [
        str(lang.planned),
        *(str(lang.count(s)) for s in _SHOWN),
        str(other),
        f"{lang.percent:.0f} %",
        rate(lang.rate_per_s) if moving else "-",
        duration(lang.eta_s) if moving else "-",
    ]
    return f"  {lang.language:<8}" + "".join(f"{c:>10}" for c in cells)


def header(progress: SendProgress) -> str:
    what = progress.intent.replace("_", "-")
    if progress.is_test:
        what = f"TEST send to {progress.test_to or 'one address'} (not counted with real sends)"
    elif progress.intent == "first":
        what = "send"
    status = "planning…" if progress.planning else progress.status
    return (
        f"{progress.issue_key} {what} {progress.send_id}: {status}, started "
        f"{progress.created_at.strftime('%Y-%m-%d %H:%M:%S')} UTC"
    )


def lines(progress: SendProgress, *, reasons: int = 3) -> list[str]:
    out = [header(progress)]
    planned = sum(lang.total for lang in progress.languages)
    if progress.planning and not planned:
        out.append("  planning… no deliveries written yet")
        return out
    if progress.planning:
        out.append(f"  planning… {planned} deliveries written so far")
    out.append(f"  {'edition':<8}" + "".join(f"{c:>10}" for c in COLUMNS))
    moving = progress.in_progress
    out += [_row(lang, moving=moving) for lang in progress.languages]
    if len(progress.languages) > 1:
        total = LanguageProgress(
            language="all",
            counts={
                status: sum(lang.counts.get(status, 0) for lang in progress.languages)
                for lang in progress.languages
                for status in lang.counts
            },
            sent_in_window=sum(lang.sent_in_window for lang in progress.languages),
            window_s=progress.languages[0].window_s,
        )
        out.append(_row(total, moving=moving))
    for label, statuses in (
        ("deferral", ("deferred",)),
        ("failure", FAILURE_STATUSES),
        ("not-sent", NOT_SENT_STATUSES),
    ):
        top = progress.top(*statuses, limit=reasons)
        if not top:
            continue
        out.append(f"  top {label} reasons:")
        for reason in top:
            domains = ", ".join(f"{d} {n}" for d, n in reason.domains)
            out.append(f"    {reason.count:>6}x {reason.status:<8} {reason.reply}  [{domains}]")
    return out


def finished(progress: SendProgress) -> bool:
    return not progress.in_progress and not any(
        lang.count(*_OPEN, "deferred") for lang in progress.languages
    )
