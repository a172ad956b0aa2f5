"""The built-in SMTP sink: an aiosmtpd server that stores each message in a Maildir.

``newsletter demo`` points the dispatcher at it, and the tests use it as the SMTP server over a
real socket. It speaks real SMTP (EHLO, 8BITMIME, SMTPUTF8, pipelining of the client) and keeps
every message exactly as received, with the envelope in ``X-Sink-*`` headers prepended.
"""

from __future__ import annotations

import mailbox
import threading
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

DATA_SIZE_LIMIT = 10 * 1024 * 1024


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    def parsed(self) -> EmailMessage:
        return message_from_bytes(self.data, policy=policy.default)


@dataclass
class MaildirHandler:
    """Stores every accepted message; keeps them in memory too when ``keep`` is set."""

    maildir: Path | None = None
    keep: bool = True
    received: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._box = mailbox.Maildir(self.maildir, create=True) if self.maildir else None

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        data = envelope.original_content or b""
        if isinstance(envelope.content, bytes):
            data = envelope.content
        item = Received(
            mail_from=str(envelope.mail_from), rcpt_tos=list(envelope.rcpt_tos), data=data
        )
        with self._lock:
            if self.keep:
                self.received.append(item)
            if self._box is not None:
                envelope_lines = (
                    f"X-Sink-Mail-From: {item.mail_from}\r\n"
                    f"X-Sink-Rcpt-To: {', '.join(item.rcpt_tos)}\r\n"
                ).encode()
                self._box.add(envelope_lines + data)
        return "250 2.0.0 OK: queued"

    def count(self) -> int:
        with self._lock:
            return len(self.received)


class SmtpSink:
    """Runs a :class:`MaildirHandler` on a port in a background thread (aiosmtpd Controller)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        maildir: Path | None = None,
        keep: bool = True,
        handler: Any = None,
    ) -> None:
        self.handler = handler or MaildirHandler(maildir=maildir, keep=keep)
        self._controller = Controller(
            self.handler,
            hostname=host,
            port=port or _free_port(host),
            data_size_limit=DATA_SIZE_LIMIT,
            enable_SMTPUTF8=True,
            decode_data=False,
            ready_timeout=10,
        )

    @property
    def url(self) -> str:
        return f"smtp://{self._controller.hostname}:{self._controller.port}"

    @property
    def port(self) -> int:
        return int(self._controller.port)

    def start(self) -> SmtpSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
