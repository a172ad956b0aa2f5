"""The renderer's two consumers.

- ``renderer.transactional``: ``RenderTransactional`` -> render in the command's language ->
  publish ``DeliverTransactional`` (same ``message_id``, so a redelivered command yields a
  delivery the dispatcher deduplicates).
- ``renderer.issues``: ``RenderIssue`` -> parse the sources, check the send request against the
  issue's earlier sends (``issue_sends``), choose each segment's edition
  (fallbacks), render each once, preflight (static checks), store ``Edition`` rows, publish
  ``PlanSend``.

Poison messages (undecodable bodies) and invalid commands (a broken issue, a second first send
of an issue, a refused plan, a template error, a failed preflight) are rejected without
requeue: the queue dead-letters them to ``newsletter.dead-letters``, and the reason is logged.
A publish that the broker does not confirm is requeued (the quorum queue's delivery limit
bounds the retries). Acks come after the commit.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
    ConsumerTag,
)

from services.renderer.catalogs import Templates
from services.renderer.click_store import save_tracked_links
from services.renderer.editions import render_plan_async
from services.renderer.erasures import ErasureHandler
from services.renderer.errors import RendererError
from services.renderer.issue import parse_sources
from services.renderer.issue_sends import IssueIdentity, intent_of_command, record_command
from services.renderer.metrics import RendererMetrics
from services.renderer.opens import OpenPixels, OpenTokens
from services.renderer.preflight import check_static
from services.renderer.readiness import verdict
from services.renderer.render import render_transactional
from services.renderer.store import Sessions, save_editions
from services.renderer.tracking import EditionTracker, LinkTokens
from shared.db.tables import Edition
from shared.messaging.publisher import Publisher, PublishError
from shared.messaging.schemas import (
    DeliverTransactional,
    PlanSend,
    RenderIssue,
    RenderTransactional,
    UndecodableMessage,
    decode,
)
from shared.messaging.topology import (
    DELIVER_TRANSACTIONAL,
    PLAN_SEND,
    RENDERER_ERASURES,
    RENDERER_ISSUES,
    RENDERER_TRANSACTIONAL,
    declare_queue,
)

log = structlog.get_logger(__name__)

PREFETCH = 8


class InvalidCommand(RendererError):
    """A well-formed message that asks for something impossible (rejected, dead-lettered)."""


@dataclass
class RenderServices:
    """What the handlers need, wired by the composition root."""

    templates: Templates
    publisher: Publisher
    sessions: Sessions
    metrics: RendererMetrics
    pages_url: str
    link_tokens: LinkTokens | None = None  # None: no tracked links (tests of other concerns)
    open_tokens: OpenTokens | None = None  # None: no open pixel (NEWSLETTER_OPEN_TRACKING off)
    per_reader: bool = False  # NEWSLETTER_PER_READER_ANALYTICS: the marker after tracked links


async def handle_transactional(command: RenderTransactional, *, deps: RenderServices) -> None:
    with deps.metrics.render_seconds.labels(kind=command.kind, language=command.language).time():
        mail = await asyncio.to_thread(
            render_transactional,
            deps.templates,
            kind=command.kind,
            language=command.language,
            links=command.links,
        )
    report = check_static(mail)
    if not report.ok:
        raise InvalidCommand(
            f"the {command.kind} mail fails its checks: " + "; ".join(str(f) for f in report.errors)
        )
    await deps.publisher.publish(
        DeliverTransactional(
            message_id=command.message_id,
            kind=command.kind,
            language=command.language,
            subscriber_id=command.subscriber_id,
            to=command.to,
            subject=mail.subject,
            html=mail.html,
            text=mail.text,
            list_unsubscribe_url=command.links.get("one_click_url"),
        ),
        routing_key=DELIVER_TRANSACTIONAL,
    )
    log.info("transactional_rendered", kind=command.kind, language=command.language)


async def handle_issue(command: RenderIssue, *, deps: RenderServices) -> None:
    # The readiness verdict of ``issue check`` and ``issue send``, again: a command published
    # by other means is refused for the same reasons.
    verdict(command.sources, segments=command.segments, fallbacks=command.fallbacks).refuse()
    editions = parse_sources(command.sources)
    # The request is normally on record already; one that is not (a command published by
    # hand) is checked against the issue's earlier sends like any other (SendRefused).
    await record_command(
        deps.sessions,
        identity=replace(IssueIdentity.of(editions), issue_key=command.issue_key),
        send_id=command.send_id,
        intent=intent_of_command(command.intent, test=command.test_to is not None),
        segments=command.segments,
    )
    tracker = None
    pixel = None
    if command.tracking and command.test_to is None and deps.link_tokens is not None:
        tracker = EditionTracker(
            tokens=deps.link_tokens, pages_url=deps.pages_url, per_reader=deps.per_reader
        )
    if command.tracking and command.test_to is None and deps.open_tokens is not None:
        pixel = OpenPixels(tokens=deps.open_tokens, pages_url=deps.pages_url)
    plan, rendered = await render_plan_async(
        deps.templates,
        editions,
        segments=command.segments,
        fallbacks=command.fallbacks,
        pages_url=deps.pages_url,
        send_id=command.send_id,
        rewrite=tracker,
        pixel=pixel,
    )
    rows: list[Edition] = []
    for segment, timed in rendered.items():
        report = check_static(timed.mail)
        if not report.ok:
            raise InvalidCommand(
                f"preflight of the {segment} edition failed: "
                + "; ".join(str(f) for f in report.errors)
            )
        deps.metrics.render_seconds.labels(kind="issue", language=segment).observe(timed.seconds)
        rows.append(
            Edition(
                send_id=command.send_id,
                issue_key=command.issue_key,
                language=segment,
                content_language=timed.mail.content_language,
                subject=timed.mail.subject,
                preheader=timed.mail.preheader,
                html=timed.mail.html,
                text=timed.mail.text,
                render_ms=round(timed.seconds * 1000, 3),
                is_test=command.test_to is not None,
            )
        )
    if tracker is not None:
        # Before the editions, so no mail can go out whose links have no target yet.
        await save_tracked_links(deps.sessions, links=tracker.links)
    written = await save_editions(deps.sessions, editions=rows)
    await deps.publisher.publish(
        PlanSend(
            message_id=f"plan-{command.send_id}",
            send_id=command.send_id,
            issue_key=command.issue_key,
            segments=command.segments,
            fallbacks=plan.fallbacks,
            test_to=command.test_to,
            intent=command.intent,
            schedule=command.schedule,
        ),
        routing_key=PLAN_SEND,
    )
    log.info(
        "issue_rendered",
        editions={seg: lang for seg, lang in plan.editions.items()},
        sizes={seg: len(t.mail.html.encode()) for seg, t in rendered.items()},
        already_stored=not written,
        test=command.test_to is not None,
        tracked_links=len(tracker.links) if tracker is not None else 0,
        open_pixel=pixel is not None,
    )


class RenderConsumers:
    """Consumes the renderer's queues on one channel (its two command queues and the
    erasures); keeps strong references to them."""

    def __init__(self, deps: RenderServices) -> None:
        self._deps = deps
        self._channel: AbstractChannel | None = None
        self._queues: list[AbstractQueue] = []
        self._tags: list[ConsumerTag] = []

    async def start(self, connection: AbstractRobustConnection) -> None:
        self._channel = await connection.channel()
        await self._channel.set_qos(prefetch_count=PREFETCH)
        transactional = await declare_queue(self._channel, RENDERER_TRANSACTIONAL)
        issues = await declare_queue(self._channel, RENDERER_ISSUES)
        erasures = await declare_queue(self._channel, RENDERER_ERASURES)
        self._queues = [transactional, issues, erasures]
        self._tags = [
            await transactional.consume(self._on_transactional),
            await issues.consume(self._on_issue),
            await erasures.consume(ErasureHandler(self._deps.sessions).handle),
        ]

    async def stop(self) -> None:
        for queue, tag in zip(self._queues, self._tags, strict=True):
            await queue.cancel(tag)
        if self._channel is not None:
            await self._channel.close()

    async def _on_transactional(self, message: AbstractIncomingMessage) -> None:
        await self._handle(message, RenderTransactional)

    async def _on_issue(self, message: AbstractIncomingMessage) -> None:
        await self._handle(message, RenderIssue)

    async def _handle(
        self,
        message: AbstractIncomingMessage,
        model: type[RenderTransactional] | type[RenderIssue],
    ) -> None:
        async with message.process(
            requeue=False, reject_on_redelivered=False, ignore_processed=True
        ):
            with structlog.contextvars.bound_contextvars(
                message_id=message.message_id, message_type=model.type_name
            ):
                try:
                    command = decode(model, message.body)
                except UndecodableMessage as err:
                    log.warning("poison_message_rejected", reason=str(err)[:500])
                    await message.reject(requeue=False)
                    return
                try:
                    with structlog.contextvars.bound_contextvars(
                        **_ids(command),
                    ):
                        if isinstance(command, RenderTransactional):
                            await handle_transactional(command, deps=self._deps)
                        else:
                            await handle_issue(command, deps=self._deps)
                except PublishError as err:
                    log.warning("publish_failed_requeued", reason=str(err)[:500])
                    await message.reject(requeue=True)
                    return
                except RendererError as err:
                    log.error("render_command_rejected", reason=str(err)[:2000])
                    await message.reject(requeue=False)
                    return
                await message.ack()


def _ids(command: RenderTransactional | RenderIssue) -> dict[str, object]:
    if isinstance(command, RenderIssue):
        return {"send_id": command.send_id, "issue_key": command.issue_key}
    return {"subscriber_id": command.subscriber_id, "kind": command.kind}
