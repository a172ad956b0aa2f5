"""Rendering the editions of one send (each language once), shared by the consumer, the CLI
preflight, the editor page and the render timing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from services.renderer.catalogs import Templates
from services.renderer.issue import IssueEdition
from services.renderer.readiness import SendPlan, plan_send
from services.renderer.render import EditionContext, RenderedMail, render_edition

#: Rewrites an edition before it is rendered for a segment (tracked links, issue 18).
EditionRewrite = Callable[[IssueEdition, str], IssueEdition]
#: The open pixel's URL of an issue number and segment (``NEWSLETTER_OPEN_TRACKING=true``).
PixelUrl = Callable[[int, str], str]


@dataclass(frozen=True)
class TimedMail:
    mail: RenderedMail
    seconds: float


def view_url(pages_url: str, *, segment: str, send_id: str) -> str:
    """The view-in-browser link of one sent edition (the archive redirects it to the issue's
    page, or shows a test send's own edition)."""
    return f"{pages_url}/archive/{segment}/{send_id}"


def archive_url(pages_url: str, *, segment: str) -> str:
    return f"{pages_url}/{segment}/"


def render_plan(
    templates: Templates,
    editions: Mapping[str, IssueEdition],
    *,
    segments: Sequence[str],
    fallbacks: Mapping[str, str],
    pages_url: str,
    send_id: str,
    rewrite: EditionRewrite | None = None,
    pixel: PixelUrl | None = None,
) -> tuple[SendPlan, dict[str, TimedMail]]:
    """Plan the send (refusing missing editions) and render each segment's edition once.

    A test send renders the same editions: the dispatcher prefixes "[TEST]" to the subject of
    each mail it sends for a ``PlanSend.test_to`` (services/dispatcher/composer.py), and the
    ``edition`` rows are marked ``is_test`` (kept out of the archive and feeds).
    """
    plan = plan_send(editions, segments=segments, fallbacks=fallbacks)
    rendered: dict[str, TimedMail] = {}
    for segment, language in plan.editions.items():
        started = time.perf_counter()
        context = EditionContext(
            segment=segment,
            view_url=view_url(pages_url, segment=segment, send_id=send_id),
            archive_url=archive_url(pages_url, segment=segment),
            open_pixel_url=pixel(editions[language].number, segment) if pixel else "",
        )
        source = editions[language]
        if rewrite is not None:
            source = rewrite(source, segment)
        mail = render_edition(templates, source, context=context)
        rendered[segment] = TimedMail(mail, time.perf_counter() - started)
    return plan, rendered


async def render_plan_async(
    templates: Templates,
    editions: Mapping[str, IssueEdition],
    *,
    segments: Sequence[str],
    fallbacks: Mapping[str, str],
    pages_url: str,
    send_id: str,
    rewrite: EditionRewrite | None = None,
    pixel: PixelUrl | None = None,
) -> tuple[SendPlan, dict[str, TimedMail]]:
    """:func:`render_plan` off the event loop (Jinja2 and premailer are CPU-bound)."""
    return await asyncio.to_thread(
        render_plan,
        templates,
        editions,
        segments=segments,
        fallbacks=fallbacks,
        pages_url=pages_url,
        send_id=send_id,
        rewrite=rewrite,
        pixel=pixel,
    )
