"""Optional IMAP polling of a mailbox that collects bounces (``NEWSLETTER_BOUNCES_IMAP_URL``).

Every ``interval`` seconds: fetch unseen messages, hand each to the intake like a mail the
SMTP receiver got, and mark it seen only once its events are published (a broker outage
leaves it unseen for the next round). imaplib is blocking, so it runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import imaplib
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote, urlsplit

import structlog

from services.bounces.errors import BounceError, IntakeUnavailable
from services.bounces.intake import BounceIntake

log = structlog.get_logger(__name__)


class MailboxClient(Protocol):
    """The few IMAP calls polling needs (imaplib.IMAP4 has them; tests pass a fake)."""

    def select(self, mailbox: str = ...) -> tuple[str, list[bytes | None]]: ...
    def search(self, charset: str | None, *criteria: str) -> tuple[str, list[bytes | None]]: ...
    def fetch(self, message_set: str, message_parts: str) -> tuple[str, list[object]]: ...
    def store(self, message_set: str, command: str, flags: str) -> tuple[str, list[object]]: ...
    def logout(self) -> tuple[str, list[bytes | None]]: ...


@dataclass(frozen=True)
class ImapTarget:
    host: str
    port: int
    ssl: bool
    username: str
    password: str
    mailbox: str

    @classmethod
    def parse(cls, url: str) -> ImapTarget:
        parts = urlsplit(url)
        if parts.scheme not in {"imap", "imaps"}:
            raise BounceError("NEWSLETTER_BOUNCES_IMAP_URL must start with imap:// or imaps://")
        ssl = parts.scheme == "imaps"
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (993 if ssl else 143),
            ssl=ssl,
            username=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
            mailbox=unquote(parts.path.lstrip("/")) or "INBOX",
        )

    def connect(self) -> MailboxClient:
        client: imaplib.IMAP4 = (
            imaplib.IMAP4_SSL(self.host, self.port, timeout=30)
            if self.ssl
            else imaplib.IMAP4(self.host, self.port, timeout=30)
        )
        client.login(self.username, self.password)
        return client  # type: ignore[return-value]  # typeshed types IMAP4 more loosely


def _fetch_unseen(client: MailboxClient, mailbox: str) -> list[tuple[str, bytes]]:
    client.select(mailbox)
    status, data = client.search(None, "UNSEEN")
    if status != "OK" or not data or not data[0]:
        return []
    found: list[tuple[str, bytes]] = []
    for number in data[0].split():
        uid = number.decode()
        status, parts = client.fetch(uid, "(BODY.PEEK[])")
        for part in parts:
            if status == "OK" and isinstance(part, tuple) and isinstance(part[1], bytes):
                found.append((uid, part[1]))
    return found


async def poll_once(
    *, intake: BounceIntake, connect: Callable[[], MailboxClient], mailbox: str
) -> int:
    """One round; returns how many messages were handled and marked seen."""
    client = await asyncio.to_thread(connect)
    handled = 0
    try:
        for uid, data in await asyncio.to_thread(_fetch_unseen, client, mailbox):
            try:
                await intake.handle_mail(data, source="imap")
            except IntakeUnavailable:
                log.warning("imap_intake_unavailable")
                break
            await asyncio.to_thread(client.store, uid, "+FLAGS", "\\Seen")
            handled += 1
    finally:
        with suppress(Exception):
            await asyncio.to_thread(client.logout)
    return handled


async def poll_forever(
    *, intake: BounceIntake, target: ImapTarget, interval: float, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        try:
            count = await poll_once(intake=intake, connect=target.connect, mailbox=target.mailbox)
            if count:
                log.info("imap_polled", messages=count)
        except (OSError, imaplib.IMAP4.error) as err:
            log.warning("imap_poll_failed", error=str(err))
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
