"""SMTP servers for the tests of the dispatcher's SMTP transaction, pipelined or not.

Both log every read of a session outside the message data, so a test sees on the wire whether
MAIL, RCPT and DATA arrived in one read (RFC 2920 PIPELINING):

- :class:`ScriptedServer`: a small asyncio server in the test's own event loop that can
  misbehave where aiosmtpd cannot (354 to DATA after every recipient was refused, a hang-up in
  the middle of the message or right after the command group, silence after the final dot),
  with PIPELINING offered or not (:class:`Script`). :func:`scripted_pool` opens one with a
  one-connection :class:`SmtpPool` on it.
- :class:`LoggingController` with a :class:`WireHandler`: aiosmtpd (a real SMTP library) in
  its thread, PIPELINING added to its EHLO by a hook when asked (aiosmtpd 1.4 reads pipelined
  commands but does not offer the extension), replies scripted per address; TLS (STARTTLS)
  with :func:`self_signed` and :class:`TrustingPool`.

The servers that fail inside DATA from a thread of their own are in ``raw_mta.py``; the
aiosmtpd MTA of the end-to-end tests in ``test_mta.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from services.dispatcher.smtp import SmtpPool
from shared.settings import SmtpTarget
from tests.support.ports import free_port

_END = b"\r\n.\r\n"


@pytest.fixture(scope="module", params=["asyncio", "uvloop"], name="event_loop_policy")
def asyncio_and_uvloop(request: pytest.FixtureRequest) -> asyncio.AbstractEventLoopPolicy:
    """Each test of a module that assigns this fixture to ``event_loop_policy`` runs on
    asyncio's loop and on uvloop, the dispatcher's loop in production (it hands data to
    protocols in another order)."""
    if request.param == "uvloop":
        import uvloop

        policy: asyncio.AbstractEventLoopPolicy = uvloop.EventLoopPolicy()
        return policy
    return asyncio.DefaultEventLoopPolicy()


def message(recipient: str, *, size: int, message_id: bool = False) -> bytes:
    """A plain message of about ``size`` bytes to ``recipient`` (CRLF lines, no leading dot)."""
    line = b"The council met on Tuesday and agreed the budget for the new library.\r\n"
    extra = f"Message-ID: <{uuid.uuid4().hex}@news.example>\r\n" if message_id else ""
    head = f"From: news@news.example\r\nTo: {recipient}\r\n{extra}Subject: test\r\n\r\n"
    return head.encode() + line * (size // len(line))


def group_reads(reads: list[bytes]) -> list[bytes]:
    """The reads that held a MAIL command."""
    return [r for r in reads if b"MAIL FROM:" in r]


# -- the scripted server ------------------------------------------------------------------------


@dataclass
class Script:
    pipelining: bool = True
    mail_replies: dict[str, str] = field(default_factory=dict)  # by sender
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_replies: dict[str, str] = field(default_factory=dict)  # to the DATA command itself
    dot_replies: dict[str, str] = field(default_factory=dict)
    accept_data_without_rcpt: bool = False  # answer DATA 354 even with no recipient (RFC 2920)
    drop_mid_data: set[str] = field(default_factory=set)
    close_on_rcpt: set[str] = field(default_factory=set)  # hang up before any reply
    silent_after_dot: set[str] = field(default_factory=set)  # read the message, never answer


@dataclass
class Taken:
    rcpts: list[str]
    data: bytes
    reply: str


class _Session(asyncio.Protocol):
    def __init__(self, mta: ScriptedServer) -> None:
        self.mta = mta
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.in_data = False
        self.rcpts: list[str] = []
        self.sender = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._send("220 scripted ready")

    def _send(self, line: str) -> None:
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.write(line.encode() + b"\r\n")

    def data_received(self, data: bytes) -> None:
        if not self.in_data:
            self.mta.reads.append(data)
        self.buffer += data
        while True:
            if self.in_data:
                if not self._data():
                    return
                continue
            if b"\r\n" not in self.buffer:
                return
            end = self.buffer.index(b"\r\n")
            line = bytes(self.buffer[:end]).decode()
            del self.buffer[: end + 2]
            self._command(line)
            if self.transport is None or self.transport.is_closing():
                return

    def _command(self, line: str) -> None:
        script = self.mta.script
        verb = line[:4].upper()
        address = m.group(1) if (m := re.search(r"<([^>]*)>", line)) else ""
        if verb == "EHLO":
            extra = "250-PIPELINING\r\n" if script.pipelining else ""
            self._send(f"250-scripted\r\n{extra}250-8BITMIME\r\n250 SMTPUTF8")
        elif verb == "MAIL":
            self.rcpts, self.sender = [], ""
            reply = script.mail_replies.get(address, "250 2.1.0 ok")
            if reply.startswith("250"):
                self.sender = address
            self._send(reply)
        elif verb == "RCPT":
            if address in script.close_on_rcpt:
                assert self.transport is not None
                self.transport.close()
                return
            if not self.sender:
                self._send("503 5.5.1 need MAIL first")
                return
            reply = script.rcpt_replies.get(address, "250 2.1.5 ok")
            if reply.startswith("25"):
                self.rcpts.append(address)
            self._send(reply)
        elif verb == "DATA":
            refusal = next(
                (script.data_replies[r] for r in self.rcpts if r in script.data_replies), ""
            )
            if refusal:
                self._send(refusal)
            elif self.rcpts or script.accept_data_without_rcpt:
                self.in_data = True
                self._send("354 end with <CRLF>.<CRLF>")
            else:
                self._send("554 5.5.1 no valid recipients")
        elif verb == "RSET":
            self.rcpts, self.sender = [], ""
            self._send("250 ok")
        elif verb == "QUIT":
            self._send("221 bye")
            assert self.transport is not None
            self.transport.close()
        else:
            self._send("250 ok")

    def _data(self) -> bool:
        """Handle message data; False when more is needed."""
        script = self.mta.script
        if self.buffer.startswith(b".\r\n"):  # the empty message
            end, size = 0, 3
        else:
            found = self.buffer.find(_END)
            end, size = (found + 2, len(_END) - 2) if found >= 0 else (-1, 0)
        if end < 0:
            if any(r in script.drop_mid_data for r in self.rcpts):
                self.mta.dropped += 1
                assert self.transport is not None
                self.transport.close()  # our data unread in the kernel: a reset
            return False
        data = bytes(self.buffer[:end])
        del self.buffer[: end + size]
        self.in_data = False
        reply = next((script.dot_replies[r] for r in self.rcpts if r in script.dot_replies), "")
        reply = reply or ("250 2.0.0 queued" if self.rcpts else "554 5.5.1 no valid recipients")
        if any(r in script.silent_after_dot for r in self.rcpts):
            reply = ""
        self.mta.taken.append(Taken(list(self.rcpts), data, reply))
        self.rcpts, self.sender = [], ""
        if reply:
            self._send(reply)
        return True


class ScriptedServer:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.reads: list[bytes] = []  # every read outside message data, as it arrived
        self.taken: list[Taken] = []
        self.dropped = 0
        self.port = free_port()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    async def __aenter__(self) -> ScriptedServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # A small receive buffer (inherited by accepted sockets): a message is read in several
        # chunks, and one dropped mid-DATA still has its end unread in the kernel.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(16)
        sock.setblocking(False)
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Session(self), sock=sock
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    def bodies_for(self, rcpt: str) -> list[Taken]:
        return [t for t in self.taken if rcpt in t.rcpts]


# -- aiosmtpd -----------------------------------------------------------------------------------


class WireHandler:
    def __init__(self, *, pipelining: bool) -> None:
        self.pipelining = pipelining
        self.mail_replies: dict[str, str] = {}
        self.rcpt_replies: dict[str, str] = {}
        self.dot_replies: dict[str, str] = {}
        self.accepted: list[str] = []

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self.mail_replies.get(address)
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self.rcpt_replies.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        for rcpt in envelope.rcpt_tos:
            if rcpt in self.dot_replies:
                return self.dot_replies[rcpt]
        self.accepted.extend(envelope.rcpt_tos)
        return "250 2.0.0 OK"


class LoggingController(Controller):
    """aiosmtpd whose sessions log every read outside the message data."""

    def __init__(self, handler: WireHandler, **smtp: Any) -> None:
        super().__init__(
            handler,
            hostname="127.0.0.1",
            port=free_port(),
            decode_data=False,
            ready_timeout=10,
            **smtp,
        )
        self.reads: list[bytes] = []

    def factory(self) -> SMTP:
        reads = self.reads

        class _Logging(SMTP):
            def data_received(self, data: bytes) -> None:
                if b"MAIL FROM:" in data or b"RCPT TO:" in data or data.startswith(b"DATA"):
                    reads.append(data)
                super().data_received(data)

        return _Logging(self.handler, **self.SMTP_kwargs)


@contextlib.asynccontextmanager
async def scripted_pool(
    script: Script, *, timeout: float = 5.0
) -> AsyncIterator[tuple[ScriptedServer, SmtpPool]]:
    """A :class:`ScriptedServer` playing ``script`` and a one-connection pool on it."""
    async with ScriptedServer(script) as mta:
        pool = SmtpPool(target=SmtpTarget(mta.url), size=1, timeout=timeout)
        try:
            yield mta, pool
        finally:
            await pool.close()


# -- TLS ----------------------------------------------------------------------------------------


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class TrustingPool(SmtpPool):
    """The pool, trusting the test's own certificate (the one seam: how the client is built)."""

    def __init__(self, *, url: str, cert: Path) -> None:
        super().__init__(target=SmtpTarget(url), size=1, timeout=5.0)
        self._cert = cert

    def _client(self) -> aiosmtplib.SMTP:
        client = super()._client()
        client.cert_bundle = str(self._cert)
        return client
