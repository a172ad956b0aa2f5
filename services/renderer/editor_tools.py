"""The editors' command-line tools behind ``newsletter issue check|preview|send``."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from aiormq.exceptions import AMQPError
from sqlalchemy import func
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import select

from services.renderer import issue_sends
from services.renderer.catalogs import Publication, Templates
from services.renderer.editions import archive_url, render_plan, view_url
from services.renderer.errors import IssueNotReady
from services.renderer.fill import FillPlan, recipient_values
from services.renderer.issue import LANGUAGES, IssueEdition, IssueFolder, parse_sources
from services.renderer.issue_sends import IssueIdentity, Surface
from services.renderer.link_checks import LinkReport, LinkTarget, check_links, link_client
from services.renderer.mime import build_message
from services.renderer.preflight import PreflightReport, preflight
from services.renderer.readiness import Matrix, Verdict, verdict
from services.renderer.render import EditionContext, render_edition
from services.renderer.sending import PreparedSend, prepare_send, sample_for
from services.renderer.settings import RendererSettings
from services.renderer.store import Sessions
from shared.db.engine import create_engine, session_factory
from shared.db.tables import Delivery, Send, SendIntent, SendStatus
from shared.messaging.publisher import Publisher, PublishError
from shared.messaging.schemas import SendSchedule
from shared.messaging.topology import RENDER_ISSUE, connect

Echo = Callable[[str], None]


@dataclass
class CheckResult:
    verdict: Verdict
    reports: dict[str, PreflightReport]
    links: LinkReport | None = None

    @property
    def matrix(self) -> Matrix | None:
        return self.verdict.matrix

    @property
    def ok(self) -> bool:
        return (
            self.verdict.ready
            and all(r.ok for r in self.reports.values())
            and (self.links is None or self.links.ok)
        )


def check_issue(
    path: Path,
    *,
    settings: RendererSettings,
    templates: Templates,
    spam: bool = True,
    segments: Sequence[str] = LANGUAGES,
    fallbacks: Mapping[str, str] | None = None,
) -> CheckResult:
    """The readiness verdict (the one ``issue send`` refuses on) plus each edition's preflight.

    A broken issue is a verdict with problems, never an exception; each language file present is
    rendered for its own segment and preflighted, as far as it parses.
    """
    folder = IssueFolder.read(path)
    found = verdict(folder.sources, segments=segments, fallbacks=fallbacks)
    rendered = {
        lang: render_edition(
            templates,
            edition,
            context=EditionContext(
                segment=lang,
                view_url=view_url(settings.pages_url, segment=lang, send_id="preview"),
                archive_url=archive_url(settings.pages_url, segment=lang),
            ),
        )
        for lang, edition in found.editions.items()
    }
    sample = sample_for(settings)
    with ThreadPoolExecutor(max_workers=len(rendered) or 1) as pool:
        futures = {
            lang: pool.submit(preflight, mail, sender=settings.sender, sample=sample, spam=spam)
            for lang, mail in rendered.items()
        }
        reports = {lang: future.result() for lang, future in futures.items()}
    return CheckResult(found, reports)


def link_targets(editions: Mapping[str, IssueEdition]) -> list[LinkTarget]:
    """Every link and image of the editions, with where it is written."""
    return [
        LinkTarget(url=link.url, file=edition.file, line=link.line, column=link.column)
        for edition in editions.values()
        for article in edition.articles
        for link in article.links
    ]


def check_links_of(result: CheckResult, *, timeout: float, concurrency: int) -> CheckResult:
    """``issue check --links``: ask every web link of the parsed editions (real HTTP)."""

    async def ask() -> LinkReport:
        async with link_client(timeout=timeout, concurrency=concurrency) as client:
            return await check_links(
                link_targets(result.verdict.editions),
                client=client,
                concurrency=concurrency,
                timeout=timeout,
            )

    result.links = asyncio.run(ask())
    return result


def print_check(result: CheckResult, *, echo: Echo, err: Echo | None = None) -> None:
    """The matrix and preflight on ``echo``; each problem as ``file:line:column: …`` on ``err``."""
    err = err or echo
    if result.matrix is not None:
        echo(result.matrix.as_text())
    for lang, report in result.reports.items():
        score = "n/a" if report.spam_score is None else f"{report.spam_score:.1f}"
        echo(f"{lang}: html {report.html_bytes} bytes, spam score {score}")
        for finding in report.findings:
            echo(f"  {finding}")
    for problem in result.verdict.problems:
        err(str(problem))
    if result.links is not None:
        for line in result.links.lines():
            err(line)
    echo("ready to send" if result.ok else "NOT ready to send")


def write_previews(
    path: Path, out: Path, *, settings: RendererSettings, templates: Templates
) -> list[Path]:
    """Each language's .html, .txt and complete .eml, filled for a sample recipient."""
    folder = IssueFolder.read(path)
    editions = parse_sources(folder.sources)
    _plan, rendered = render_plan(
        templates,
        editions,
        segments=list(editions),
        fallbacks={},
        pages_url=settings.pages_url,
        send_id="preview",
    )
    sample = sample_for(settings)
    values = recipient_values(
        unsubscribe_url=sample.unsubscribe_url,
        preferences_url=sample.preferences_url,
        recipient=sample.to,
    )
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for lang, timed in rendered.items():
        html = FillPlan(timed.mail.html, escape_html=True).fill(values)
        text = FillPlan(timed.mail.text, escape_html=False).fill(values)
        message = build_message(
            sender=settings.sender,
            to=sample.to,
            subject=timed.mail.subject,
            html=html,
            text=text,
            language=timed.mail.content_language,
            list_unsubscribe_url=sample.one_click_url,
            list_id=settings.list_id,
        )
        for suffix, data in (
            (".html", html.encode()),
            (".txt", text.encode()),
            (".eml", message),
        ):
            target = out / f"{lang}{suffix}"
            target.write_bytes(data)
            written.append(target)
    return written


async def publish_send(prepared: PreparedSend, *, settings: RendererSettings) -> None:
    connection = await connect(settings.amqp_url)
    try:
        publisher = await Publisher.open(connection)
        try:
            await publisher.publish(prepared.command, routing_key=RENDER_ISSUE)
        finally:
            await publisher.close()
    finally:
        await connection.close()


def _run_on_database(
    settings: RendererSettings, action: Callable[[Sessions], Coroutine[object, object, None]]
) -> None:
    """Run ``action`` with sessions on the suite's database; a database that cannot be used
    refuses the send (IssueNotReady) instead of failing with a traceback."""

    async def main() -> None:
        engine = create_engine(settings.database_url)
        try:
            await action(session_factory(engine))
        finally:
            await engine.dispose()

    try:
        asyncio.run(main())
    except (SQLAlchemyError, OSError) as err:
        raise IssueNotReady(f"the database did not answer: {str(err).splitlines()[0]}") from err


async def claim_and_publish(
    prepared: PreparedSend,
    *,
    sessions: Sessions,
    settings: RendererSettings,
    confirm_number: int | None,
) -> None:
    """Record the send request (refused if the issue's earlier sends rule it out), then
    publish it; a request the broker did not take is forgotten again."""
    await issue_sends.claim(
        sessions,
        identity=prepared.identity,
        send_id=prepared.command.send_id,
        intent=prepared.intent,
        segments=prepared.command.segments,
        surface=Surface.CLI,
        confirm_number=confirm_number,
    )
    try:
        await publish_send(prepared, settings=settings)
    except (OSError, AMQPError, PublishError) as err:
        await issue_sends.release(sessions, send_id=prepared.command.send_id)
        reason = str(err) or type(err).__name__  # a timeout says nothing of itself
        raise IssueNotReady(f"the broker did not take the send request: {reason}") from err


async def wait_for_send(
    send_id: str, *, settings: RendererSettings, timeout: float, echo: Echo
) -> bool:
    """Poll ``send`` until it is done; print deliveries by language and status. False on timeout."""
    engine = create_engine(settings.database_url)
    sessions = session_factory(engine)
    deadline = time.monotonic() + timeout
    try:
        status = ""
        while time.monotonic() < deadline:
            async with sessions() as session:
                send = await session.get(Send, send_id)
                status = send.status if send is not None else "not planned yet"
            if status == SendStatus.DONE:
                break
            await asyncio.sleep(0.5)
        async with sessions() as session:
            rows = await session.exec(
                select(Delivery.language, Delivery.status, func.count())
                .where(Delivery.send_id == send_id)
                .group_by(Delivery.language, Delivery.status)
            )
            summary: dict[str, dict[str, int]] = {}
            for language, delivery_status, count in rows.all():
                summary.setdefault(language, {})[delivery_status] = int(count)
        for language in sorted(summary):
            counts = ", ".join(f"{n} {s}" for s, n in sorted(summary[language].items()))
            echo(f"  {language}: {sum(summary[language].values())} deliveries ({counts})")
        if status != SendStatus.DONE:
            echo(f"send {send_id} not done after {timeout:.0f}s (status: {status})")
            return False
        echo(f"send {send_id} done")
        return True
    finally:
        await engine.dispose()


def send_issue(
    path: Path,
    *,
    settings: RendererSettings,
    segments: Sequence[str],
    fallbacks: dict[str, str],
    test_to: str | None,
    wait: bool,
    timeout: float,
    spam: bool,
    echo: Echo,
    intent: SendIntent = SendIntent.FIRST,
    confirm_resend: Callable[[IssueIdentity], int | None] | None = None,
    schedule: SendSchedule | None = None,
    tracking: bool = True,
) -> bool:
    """Check, record the request, publish ``RenderIssue``, optionally wait. Raise on a refused
    send (:class:`IssueNotReady`, :class:`~services.renderer.issue_sends.SendRefused`)."""
    intent = SendIntent.TEST if test_to is not None else intent
    prepared = prepare_send(
        IssueFolder.read(path),
        settings=settings,
        templates=Templates(publication=Publication.from_settings(settings)),
        segments=segments,
        fallbacks=fallbacks,
        test_to=test_to,
        spam=spam,
        intent=intent,
        schedule=schedule,
        tracking=tracking,
    )
    identity = prepared.identity
    confirm_number = None
    if intent == SendIntent.RESEND_ALL:
        # Ask for the typed confirmation only when a resend is possible at all.
        _run_on_database(
            settings,
            lambda sessions: issue_sends.check(
                sessions,
                identity=identity,
                intent=intent,
                surface=Surface.CLI,
                confirm_number=identity.number,
            ),
        )
        confirm_number = confirm_resend(identity) if confirm_resend else None
    for warning in prepared.warnings:
        echo(str(warning))
    for finding in (f for r in prepared.reports.values() for f in r.findings):
        echo(f"warning: {finding}")
    _run_on_database(
        settings,
        lambda sessions: claim_and_publish(
            prepared, sessions=sessions, settings=settings, confirm_number=confirm_number
        ),
    )
    plan = ", ".join(f"{seg}<-{lang}" for seg, lang in prepared.plan.editions.items())
    echo(
        f"send {prepared.command.send_id} requested"
        + ("" if intent == SendIntent.FIRST else f" ({intent.value.replace('_', '-')})")
    )
    echo(
        f"  {identity.label}, editions {plan}"
        + (f", TEST to {test_to} (not counted as a send of the issue)" if test_to else "")
    )
    if schedule is not None:
        echo(f"  {describe_schedule(schedule)} (newsletter send list; send cancel|reschedule ID)")
    if not wait or (schedule is not None and schedule.start_at is not None):
        return True
    return asyncio.run(
        wait_for_send(prepared.command.send_id, settings=settings, timeout=timeout, echo=echo)
    )


def describe_schedule(schedule: SendSchedule) -> str:
    parts = []
    if schedule.start_at is not None:
        zone = ZoneInfo(schedule.time_zone or "UTC")
        parts.append(
            f"scheduled for {schedule.start_at.astimezone(zone):%Y-%m-%d %H:%M} "
            f"{schedule.time_zone or 'UTC'}"
        )
    if schedule.local_time is not None:
        parts.append(f"each reader at {schedule.local_time} in their own time zone")
    return ", ".join(parts)


def check_as_json(result: CheckResult) -> str:
    return json.dumps(
        {
            **result.verdict.as_dict(),
            "preflight": {
                lang: {
                    "html_bytes": r.html_bytes,
                    "spam_score": r.spam_score,
                    "findings": [str(f) for f in r.findings],
                }
                for lang, r in result.reports.items()
            },
            "links": result.links.as_dict() if result.links is not None else None,
            "ready": result.ok,
        },
        ensure_ascii=False,
        indent=2,
    )


__all__ = ["IssueNotReady", "check_issue", "send_issue", "write_previews"]
