"""Preparing a send from an issue folder: parse, plan, render, preflight, build the command.

Used by ``newsletter issue send``, the editor page and the admin API, so that a send refuses
to start for the same reasons wherever it is started.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from services.renderer.catalogs import Templates
from services.renderer.editions import TimedMail, render_plan
from services.renderer.errors import IssueNotReady, Problem
from services.renderer.issue import LANGUAGES, IssueFolder
from services.renderer.issue_sends import IssueIdentity, command_intent
from services.renderer.preflight import PreflightReport, SampleRecipient, preflight
from services.renderer.readiness import Matrix, SendPlan, verdict
from services.renderer.settings import RendererSettings
from shared.clock import BadMoment, Clock, local_moment
from shared.db.tables import SendIntent
from shared.messaging.schemas import RenderIssue, SendSchedule


@dataclass
class PreparedSend:
    command: RenderIssue
    plan: SendPlan
    matrix: Matrix
    rendered: dict[str, TimedMail]
    reports: dict[str, PreflightReport]
    identity: IssueIdentity
    warnings: list[Problem] = field(default_factory=list)  # the verdict's, not blocking
    intent: SendIntent = SendIntent.FIRST


def parse_fallbacks(values: Sequence[str]) -> dict[str, str]:
    """``["be=ru"]`` -> ``{"be": "ru"}``; raise :class:`IssueNotReady` on a malformed one."""
    fallbacks: dict[str, str] = {}
    for value in values:
        for item in filter(None, (v.strip() for v in value.split(","))):
            segment, sep, language = item.partition("=")
            if not sep or segment not in LANGUAGES or language not in LANGUAGES:
                raise IssueNotReady(
                    f"fallback {item!r} must be SEGMENT=LANGUAGE with both in {LANGUAGES}"
                )
            fallbacks[segment] = language
    return fallbacks


def parse_segments(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return list(LANGUAGES)
    items = value.split(",") if isinstance(value, str) else list(value)
    segments = [s.strip() for s in items if s.strip()]
    unknown = [s for s in segments if s not in LANGUAGES]
    if unknown or not segments:
        raise IssueNotReady(f"segments must be among {LANGUAGES}, not {unknown or 'nothing'}")
    return list(dict.fromkeys(segments))


def parse_schedule(
    *, at: str | None, tz: str | None, local_time: str | None, clock: Clock
) -> SendSchedule | None:
    """``--at "2026-12-07 09:00" --tz Europe/Minsk`` and ``--local-time 09:00`` as a schedule
    (None: at once, at whatever hour); raise :class:`IssueNotReady` on what cannot be read or
    a start in the past."""
    if at is None and local_time is None:
        if tz is not None:
            raise IssueNotReady("a time zone (--tz) goes with a start time (--at)")
        return None
    start = None
    if at is not None:
        try:
            start = local_moment(at, tz=tz or "UTC")
        except BadMoment as err:
            raise IssueNotReady(str(err)) from err
        if start <= clock.now():
            raise IssueNotReady(
                f"the start {at} ({tz or 'UTC'}) is in the past: give a later one, or leave out "
                "the start to send now"
            )
    try:
        return SendSchedule(start_at=start, time_zone=tz, local_time=local_time)
    except ValueError as err:
        raise IssueNotReady(
            f"the local time must be HH:MM such as 09:00, not {local_time!r}"
        ) from err


def sample_for(settings: RendererSettings) -> SampleRecipient:
    return SampleRecipient.for_settings(
        public_url=settings.public_url,
        secret_key=settings.secret_key.get_secret_value(),
        domain=settings.sender.domain,
    )


def prepare_send(
    folder: IssueFolder,
    *,
    settings: RendererSettings,
    templates: Templates,
    segments: Sequence[str],
    fallbacks: Mapping[str, str],
    test_to: str | None = None,
    spam: bool = True,
    intent: SendIntent = SendIntent.FIRST,
    schedule: SendSchedule | None = None,
    tracking: bool = True,
) -> PreparedSend:
    """Everything a send needs, checked; raise IssueNotReady (naming every problem) otherwise."""
    found = verdict(folder.sources, segments=segments, fallbacks=fallbacks)
    found.refuse()  # the same verdict as ``issue check``: raises IssueNotReady with every error
    editions, matrix = found.editions, found.matrix
    assert matrix is not None  # a ready verdict has parsed editions
    send_id = str(uuid.uuid4())
    plan, rendered = render_plan(
        templates,
        editions,
        segments=segments,
        fallbacks=fallbacks,
        pages_url=settings.pages_url,
        send_id=send_id,
    )
    sample = sample_for(settings)
    # SpamAssassin is a process of about a second per edition: run the editions side by side.
    with ThreadPoolExecutor(max_workers=len(rendered) or 1) as pool:
        futures = {
            segment: pool.submit(
                preflight, timed.mail, sender=settings.sender, sample=sample, spam=spam
            )
            for segment, timed in rendered.items()
        }
        reports = {segment: future.result() for segment, future in futures.items()}
    failed = [
        f"{segment}: {finding}" for segment, report in reports.items() for finding in report.errors
    ]
    if failed:
        raise IssueNotReady("preflight failed:\n" + "\n".join(failed))
    first = next(iter(editions.values()))
    command = RenderIssue(
        send_id=send_id,
        issue_key=first.issue_key,
        sources=dict(folder.sources),
        segments=list(segments),
        fallbacks=dict(plan.fallbacks),
        test_to=test_to,
        intent=command_intent(intent),
        schedule=schedule,
        tracking=tracking,
    )
    identity = IssueIdentity.of(editions)
    intent = SendIntent.TEST if test_to is not None else intent
    return PreparedSend(
        command, plan, matrix, rendered, reports, identity, found.warnings, intent=intent
    )


async def prepare_send_async(folder: IssueFolder, **kwargs: object) -> PreparedSend:
    """:func:`prepare_send` off the event loop (rendering and SpamAssassin take a while)."""
    return await asyncio.to_thread(prepare_send, folder, **kwargs)  # type: ignore[arg-type]
