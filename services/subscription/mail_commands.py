"""Asking the renderer for the subscriber's transactional mails (``render.transactional``).

The subscription service never builds a mail itself: it publishes ``RenderTransactional``
with the signed links the mail must show, and waits for the broker's confirm.
"""

from __future__ import annotations

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
        except (
            PublishError,
            aio_pika.exceptions.AMQPError,
            aio_pika.exceptions.ChannelInvalidStateError,
            OSError,
            TimeoutError,
        ) as err:
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
