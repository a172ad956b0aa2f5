"""The report of one issue (issue 18): clicks per article and edition, and what each edition's
deliveries became. Read by ``newsletter report issue N``, the editor's report page and the CSV
export; every figure is an aggregate (clicks are never tied to a reader).

- Clicks: ``link_click`` rows of the issue, ``counted`` (readers) apart from each filter
  reason (``head``, ``prefetch``, ``scanner``, ``burst``).
- Share of the edition's deliveries: counted clicks on the article / mails of that edition
  delivered. Clicks, not readers: a reader who clicks twice counts twice (counting people would
  need a per-reader record of everyone; per-reader mode keeps one only of readers who
  consented, which is no basis for a share of all readers, so the report does not use it).
- Per edition, over the issue's non-test sends: ``delivered`` (the receiving server took it:
  ``sent`` or later ``complained``), ``bounced`` (refused at once, or a bounce report about the
  delivery later), ``complaints`` (a complaint about the delivery, or its status), and
  ``unsubscribes`` attributed to the issue: readers who got it and unsubscribed after it was
  sent and before the next issue's first send (or a mailto unsubscribe naming the delivery).
- Opens, only when ``NEWSLETTER_OPEN_TRACKING=true`` was on for the send (``mail_open`` rows):
  per edition, ``loads`` of the pixel a reader may stand behind (mail programs and Gmail's
  proxy), ``apple_preloads`` (likely Apple Mail Privacy Protection, no reader needed) and
  ``loads_filtered`` (HEAD, prefetch, scanners). Machine-inflated: a proxy that preloads with a
  browser's User-Agent cannot be told apart, and one reader opening twice loads twice
  (``services/renderer/opens.py`` gives the sources).
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select

from services.renderer.click_store import clicks_of_issue, links_of_issue, opens_of_issue
from services.renderer.opens import LOADS
from services.renderer.store import Sessions
from shared.db.tables import (
    BounceDecision,
    ClickVerdict,
    Delivery,
    DeliveryStatus,
    IssueSend,
    LinkClick,
    MailOpen,
    OpenVerdict,
    Send,
    SendIntent,
    Subscriber,
)
from shared.settings import LANGUAGES

FILTER_REASONS = tuple(v.value for v in ClickVerdict if v is not ClickVerdict.COUNTED)


@dataclass
class ArticleFigures:
    index: int
    key: str
    title: str
    clicks: dict[str, int]  # edition -> readers' clicks
    share: dict[str, float | None]  # edition -> clicks / delivered (None: nothing delivered)
    filtered: dict[str, dict[str, int]]  # edition -> reason -> requests
    total: int = 0
    total_filtered: int = 0


@dataclass
class EditionFigures:
    edition: str
    delivered: int = 0
    bounced: int = 0
    complaints: int = 0
    unsubscribes: int = 0
    clicks: int = 0
    filtered: int = 0
    loads: int = 0  # open pixel loads by mail programs and Gmail's proxy (machine-inflated)
    gmail_proxy: int = 0  # of which through Gmail's image proxy
    apple_preloads: int = 0  # likely Apple Mail Privacy Protection preloads
    loads_filtered: int = 0  # HEAD, prefetch, scanners


@dataclass
class IssueReport:
    issue: int
    editions: list[str]
    articles: list[ArticleFigures] = field(default_factory=list)
    per_edition: list[EditionFigures] = field(default_factory=list)
    clicks: int = 0
    filtered: dict[str, int] = field(default_factory=dict)
    delivered: int = 0
    open_tracking: bool = False  # whether any load of an open pixel of the issue is on record
    loads: int = 0

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def csv(self) -> str:
        """One row per article and edition (the editor's spreadsheet)."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(
            [
                "issue",
                "article",
                "title",
                "edition",
                "clicks",
                "delivered",
                "share",
                *(f"filtered_{r}" for r in FILTER_REASONS),
            ]
        )
        delivered = {e.edition: e.delivered for e in self.per_edition}
        for article in self.articles:
            for edition in self.editions:
                share = article.share.get(edition)
                writer.writerow(
                    [
                        self.issue,
                        article.key,
                        article.title,
                        edition,
                        article.clicks.get(edition, 0),
                        delivered.get(edition, 0),
                        "" if share is None else f"{share:.4f}",
                        *(article.filtered.get(edition, {}).get(r, 0) for r in FILTER_REASONS),
                    ]
                )
        return out.getvalue()

    def text(self) -> str:
        lines = [f"Issue {self.issue}: {self.clicks} clicks by readers, "]
        lines[0] += f"{sum(self.filtered.values())} requests by machines filtered out"
        head = f"{'article':<32}" + "".join(f"{e:>16}" for e in self.editions)
        head += f"{'total':>8}{'filtered':>10}"
        lines += ["", head]
        for a in self.articles:
            cells = ""
            for e in self.editions:
                share = a.share.get(e)
                shown = f"{a.clicks.get(e, 0)}" + (f" ({share:.1%})" if share is not None else "")
                cells += f"{shown:>16}"
            lines.append(f"{a.key[:31]:<32}{cells}{a.total:>8}{a.total_filtered:>10}")
        lines += [
            "",
            f"{'edition':<10}{'delivered':>10}{'bounced':>9}{'complaints':>11}"
            f"{'unsubscribes':>13}{'clicks':>8}{'filtered':>9}",
        ]
        lines += [
            f"{e.edition:<10}{e.delivered:>10}{e.bounced:>9}{e.complaints:>11}"
            f"{e.unsubscribes:>13}{e.clicks:>8}{e.filtered:>9}"
            for e in self.per_edition
        ]
        if self.filtered:
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.filtered.items()))
            lines += ["", f"filtered: {reasons}"]
        if self.open_tracking:
            lines += [
                "",
                "opens (machine-inflated: pixel loads, not readers; proxies that preload "
                "cannot all be told apart)",
                f"{'edition':<10}{'loads':>8}{'gmail':>8}{'apple':>8}{'filtered':>10}"
                f"{'per mail':>10}",
            ]
            for figures in self.per_edition:
                per_mail = f"{figures.loads / figures.delivered:.2f}" if figures.delivered else "-"
                lines.append(
                    f"{figures.edition:<10}{figures.loads:>8}{figures.gmail_proxy:>8}{figures.apple_preloads:>8}"
                    f"{figures.loads_filtered:>10}{per_mail:>10}"
                )
        return "\n".join(lines) + "\n"


async def _sends_of(sessions: Sessions, number: int) -> list[Send]:
    async with sessions() as session:
        rows = await session.exec(
            select(Send).where(
                Send.issue_key == f"issue-{number}",
                Send.intent != SendIntent.TEST,
                col(Send.test_to).is_(None),
            )
        )
        return list(rows.all())


async def _next_issue_start(sessions: Sessions, number: int, after: datetime) -> datetime | None:
    async with sessions() as session:
        rows = await session.exec(
            select(func.min(Send.created_at)).where(
                Send.issue_key != f"issue-{number}",
                col(Send.test_to).is_(None),
                Send.created_at > after,
            )
        )
        found = rows.first()
        return found if isinstance(found, datetime) else None


async def _edition_figures(sessions: Sessions, number: int) -> dict[str, EditionFigures]:
    figures: dict[str, EditionFigures] = {}
    sends = await _sends_of(sessions, number)
    if not sends:
        return figures
    send_ids = [s.id for s in sends]
    started = min(s.created_at for s in sends)
    until = await _next_issue_start(sessions, number, started)
    async with sessions() as session:
        deliveries = list(
            (await session.exec(select(Delivery).where(col(Delivery.send_id).in_(send_ids)))).all()
        )
        ids = [d.id for d in deliveries if d.id is not None]
        decisions: dict[int, set[str]] = defaultdict(set)
        for start in range(0, len(ids), 500):
            rows = await session.exec(
                select(BounceDecision.delivery_id, BounceDecision.bounce_class).where(
                    col(BounceDecision.delivery_id).in_(ids[start : start + 500])
                )
            )
            for delivery_id, bounce_class in rows.all():
                if delivery_id is not None:
                    decisions[delivery_id].add(bounce_class)
        readers = {d.subscriber_id for d in deliveries if d.subscriber_id is not None}
        left: dict[int, datetime] = {}
        reader_ids = sorted(readers)
        for start in range(0, len(reader_ids), 500):
            rows2 = await session.exec(
                select(Subscriber.id, Subscriber.unsubscribed_at).where(
                    col(Subscriber.id).in_(reader_ids[start : start + 500]),
                    col(Subscriber.unsubscribed_at).is_not(None),
                )
            )
            for subscriber_id, unsubscribed_at in rows2.all():
                if subscriber_id is not None and unsubscribed_at is not None:
                    left[subscriber_id] = unsubscribed_at
    return _tally(deliveries, decisions, left, until)


def _tally(
    deliveries: list[Delivery],
    decisions: dict[int, set[str]],
    left: dict[int, datetime],
    until: datetime | None,
) -> dict[str, EditionFigures]:
    figures: dict[str, EditionFigures] = {}
    counted_unsubscribed: set[tuple[str, int]] = set()
    for d in deliveries:
        f = figures.setdefault(d.language, EditionFigures(d.language))
        classes = decisions.get(d.id or -1, set())
        if d.status in {DeliveryStatus.SENT, DeliveryStatus.COMPLAINED}:
            f.delivered += 1
        if d.status == DeliveryStatus.BOUNCED or classes & {"hard", "soft"}:
            f.bounced += 1
        if d.status == DeliveryStatus.COMPLAINED or "complaint" in classes:
            f.complaints += 1
        if d.subscriber_id is None or d.sent_at is None:
            continue
        gone = left.get(d.subscriber_id)
        by_mailto = "unsubscribe" in classes
        in_window = gone is not None and gone >= d.sent_at and (until is None or gone < until)
        key = (d.language, d.subscriber_id)
        if (by_mailto or in_window) and key not in counted_unsubscribed:
            counted_unsubscribed.add(key)
            f.unsubscribes += 1
    return figures


def _tally_opens(
    report: IssueReport, per_edition: dict[str, EditionFigures], loads: list[MailOpen]
) -> None:
    for load in loads:
        report.open_tracking = True
        figures = per_edition.setdefault(load.edition, EditionFigures(load.edition))
        if load.verdict in LOADS:
            figures.loads += load.count
            report.loads += load.count
            if load.verdict == OpenVerdict.GMAIL_PROXY:
                figures.gmail_proxy += load.count
        elif load.verdict == OpenVerdict.APPLE_PROXY:
            figures.apple_preloads += load.count
        else:
            figures.loads_filtered += load.count
        if load.edition not in report.editions:
            report.editions.append(load.edition)


async def issue_report(sessions: Sessions, *, issue: int) -> IssueReport:
    links = await links_of_issue(sessions, issue=issue)
    clicks = await clicks_of_issue(sessions, issue=issue)
    per_edition = await _edition_figures(sessions, issue)
    seen = {link.edition for link in links} | set(per_edition) | {c.edition for c in clicks}
    editions = [e for e in LANGUAGES if e in seen]
    titles: dict[int, tuple[str, str]] = {}
    for link in sorted(links, key=lambda r: (r.edition != "en", LANGUAGES.index(r.edition))):
        titles.setdefault(link.article, (link.article_key, link.article_title))
    for click in clicks:
        titles.setdefault(click.article, (f"article-{click.article}", ""))
    report = IssueReport(issue=issue, editions=editions)
    articles: dict[int, ArticleFigures] = {
        index: ArticleFigures(index, key, title, {}, {}, {})
        for index, (key, title) in sorted(titles.items())
    }
    for edition in editions:
        per_edition.setdefault(edition, EditionFigures(edition))
    for click in clicks:
        article = articles[click.article]
        figures = per_edition[click.edition]
        if click.verdict == ClickVerdict.COUNTED:
            article.clicks[click.edition] = article.clicks.get(click.edition, 0) + click.count
            article.total += click.count
            figures.clicks += click.count
            report.clicks += click.count
        else:
            reasons = article.filtered.setdefault(click.edition, {})
            reasons[click.verdict] = reasons.get(click.verdict, 0) + click.count
            article.total_filtered += click.count
            figures.filtered += click.count
            report.filtered[click.verdict] = report.filtered.get(click.verdict, 0) + click.count
    for article in articles.values():
        for edition in editions:
            article.clicks.setdefault(edition, 0)
            delivered = per_edition[edition].delivered
            article.share[edition] = (
                round(article.clicks[edition] / delivered, 4) if delivered else None
            )
    report.articles = list(articles.values())
    _tally_opens(report, per_edition, await opens_of_issue(sessions, issue=issue))
    report.per_edition = [per_edition[e] for e in editions]
    report.delivered = sum(e.delivered for e in report.per_edition)
    return report


@dataclass(frozen=True)
class WeekPoint:
    issue: int
    week_of: date | None
    clicks: dict[str, int]


async def clicks_by_issue(sessions: Sessions, *, last: int = 12) -> list[WeekPoint]:
    """Readers' clicks per edition of the last ``last`` issues (the week-by-week line)."""
    async with sessions() as session:
        rows = await session.exec(
            select(LinkClick.issue_number, LinkClick.edition, func.sum(LinkClick.count))
            .where(LinkClick.verdict == ClickVerdict.COUNTED)
            .group_by(col(LinkClick.issue_number), col(LinkClick.edition))
        )
        totals: dict[int, dict[str, int]] = defaultdict(dict)
        for number, edition, count in rows.all():
            totals[int(number)][edition] = int(count or 0)
        weeks = await session.exec(
            select(IssueSend.issue_number, func.min(IssueSend.date_from)).group_by(
                col(IssueSend.issue_number)
            )
        )
        week_of = {int(n): d for n, d in weeks.all() if int(n) > 0}
    numbers = sorted(totals)[-last:]
    return [WeekPoint(n, week_of.get(n), totals[n]) for n in numbers]
