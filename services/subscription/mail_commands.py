"""Asking the renderer for the subscriber's transactional mails (``render.transactional``).

The subscription service never builds a mail itself: it publishes ``RenderTransactional``
with the signed links the mail must show, and waits for the broker's confirm.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import aio_pika
import structlog

from services.subscription.errors import MailQueueUnavailable
from shared.links import Links
from shared.messaging.publisher import PublishError
from shared.messaging.schemas import Language, Message, RenderTransactional, TransactionalKind
from shared.messaging.topology import RENDER_TRANSACTIONAL

log = structlog.get_logger(__name__)


class CommandPublisher(Protocol):
    async def publish(self, message: Message, *, routing_key: str) -> None: ...


class BatchPublisher(CommandPublisher, Protocol):
    async def publish_each(
        self, messages: Sequence[Message], *, routing_key: str
    ) -> Sequence[BaseException | None]: ...


_NOT_PUBLISHED = (
    PublishError,
    aio_pika.exceptions.AMQPError,
    aio_pika.exceptions.ChannelInvalidStateError,
    OSError,
    TimeoutError,
)


@dataclass(frozen=True)
class ConfirmationTo:
    """One recipient of :meth:`TransactionalMail.request_confirmations`."""

    subscriber_id: int
    email: str
    email_hash: str
    language: Language


class TransactionalMail:
    def __init__(self, *, links: Links, publisher: CommandPublisher, public_url: str) -> None:
        self._links = links
        self._publisher = publisher
        self._public_url = public_url.rstrip("/")

    def links_for(
        self, kind: TransactionalKind, *, subscriber_id: int, email_hash: str, language: str
    ) -> dict[str, str]:
        if kind == "goodbye":
            return {"signup_url": f"{self._public_url}/?lang={language}"}
        links = {
            "unsubscribe_url": self._links.unsubscribe(subscriber_id, email_hash),
            "preferences_url": self._links.preferences(subscriber_id, email_hash),
            "one_click_url": self._links.one_click(subscriber_id, email_hash),
        }
        if kind == "confirmation":
            links["confirm_url"] = self._links.confirm(subscriber_id, email_hash)
        return links

    async def request(
        self,
        kind: TransactionalKind,
        *,
        subscriber_id: int,
        email: str,
        email_hash: str,
        language: Language,
    ) -> None:
        """Publish the command; raise :class:`MailQueueUnavailable` if the broker refuses."""
        command = RenderTransactional(
            kind=kind,
            language=language,
            subscriber_id=subscriber_id,
            to=email,
            links=self.links_for(
                kind, subscriber_id=subscriber_id, email_hash=email_hash, language=language
            ),
        )
        try:
            await self._publisher.publish(command, routing_key=RENDER_TRANSACTIONAL)
        except _NOT_PUBLISHED as err:
            log.error(
                "mail_command_not_published",
                kind=kind,
                subscriber_id=subscriber_id,
                error=type(err).__name__,
            )
            raise MailQueueUnavailable(kind) from err
        log.info(
            "mail_requested",
            kind=kind,
            subscriber_id=subscriber_id,
            language=language,
            message_id=command.message_id,
        )

    async def request_confirmations(self, recipients: Sequence[ConfirmationTo]) -> list[bool]:
        """Publish the confirmation commands of a batch of signups together (one wait for all
        the confirms); return, per recipient, whether the broker took its command.

        A publisher without ``publish_each`` (a test's fake) gets them one by one."""
        commands = [
            RenderTransactional(
                kind="confirmation",
                language=r.language,
                subscriber_id=r.subscriber_id,
                to=r.email,
                links=self.links_for(
                    "confirmation",
                    subscriber_id=r.subscriber_id,
                    email_hash=r.email_hash,
                    language=r.language,
                ),
            )
            for r in recipients
        ]
        publisher = self._publisher
        outcomes: Sequence[BaseException | None]
        try:
            if hasattr(publisher, "publish_each"):
                batch: BatchPublisher = publisher  # type: ignore[assignment]
                outcomes = await batch.publish_each(commands, routing_key=RENDER_TRANSACTIONAL)
            else:
                outcomes = await asyncio.gather(
                    *(publisher.publish(c, routing_key=RENDER_TRANSACTIONAL) for c in commands),
                    return_exceptions=True,
                )
        except _NOT_PUBLISHED as err:  # the channel itself is gone: none was taken
            outcomes = [err] * len(commands)
        queued: list[bool] = []
        for command, outcome in zip(commands, outcomes, strict=True):
            if outcome is None:
                log.info(
                    "mail_requested",
                    kind="confirmation",
                    subscriber_id=command.subscriber_id,
                    language=command.language,
                    message_id=command.message_id,
                )
            else:
                log.error(
                    "mail_command_not_published",
                    kind="confirmation",
                    subscriber_id=command.subscriber_id,
                    error=type(outcome).__name__,
                )
            queued.append(outcome is None)
        return queued
