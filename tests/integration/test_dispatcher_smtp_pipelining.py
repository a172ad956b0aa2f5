"""ESMTP PIPELINING (RFC 2920) in the dispatcher's SMTP transaction, with and without it.

Two servers over real loopback sockets, each run with PIPELINING offered and not offered:
aiosmtpd (a real SMTP library; PIPELINING added to its EHLO by a hook, since aiosmtpd 1.4 does
not offer it although it reads pipelined commands) and a small scripted asyncio server below
that can misbehave where aiosmtpd cannot (354 to DATA after every recipient was refused, a
disconnect in the middle of the message or right after the command group). Both log every read
of the session outside the message data, so the tests see on the wire whether MAIL, RCPT and
DATA arrived in one read.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from services.dispatcher.outcomes import Outcome
from services.dispatcher.smtp import SmtpPool
from shared.settings import SmtpTarget
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

SENDER = "bounces@news.example"
_END = b"\r\n.\r\n"


@pytest.fixture(scope="module", params=["asyncio", "uvloop"])
def event_loop_policy(request: pytest.FixtureRequest) -> asyncio.AbstractEventLoopPolicy:
    """On asyncio's loop and on uvloop, the dispatcher's loop in production."""
    if request.param == "uvloop":
        import uvloop

        return uvloop.EventLoopPolicy()
    return asyncio.DefaultEventLoopPolicy()


def _message(recipient: str, *, size: int = 20_000) -> bytes:
    line = b"The council met on Tuesday and agreed the budget for the new library.\r\n"
    head = f"From: news@news.example\r\nTo: {recipient}\r\nSubject: test\r\n\r\n".encode()
    return head + line * (size // len(line))


def _group_reads(reads: list[bytes]) -> list[bytes]:
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


class _Handler:
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


class _LoggingController(Controller):
    """aiosmtpd whose sessions log every read outside the message data."""

    def __init__(self, handler: _Handler, **smtp: object) -> None:
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


@pytest.fixture(params=[True, False], ids=["pipelining", "no-pipelining"])
def aiosmtpd_server(
    request: pytest.FixtureRequest,
) -> Iterator[tuple[_Handler, _LoggingController]]:
    handler = _Handler(pipelining=request.param)
    controller = _LoggingController(handler)
    controller.start()
    try:
        yield handler, controller
    finally:
        controller.stop()


@pytest.fixture
async def pool_factory() -> AsyncIterator[list[SmtpPool]]:
    pools: list[SmtpPool] = []
    yield pools
    for pool in pools:
        await pool.close()


def _pool(url: str, pools: list[SmtpPool], *, timeout: float = 5.0) -> SmtpPool:
    pool = SmtpPool(target=SmtpTarget(url), size=1, timeout=timeout)
    pools.append(pool)
    return pool


async def _send(
    pool: SmtpPool, recipient: str, *, sender: str = SENDER, size: int = 20_000
) -> Outcome:
    return await pool.send(
        sender=sender, recipient=recipient, data=_message(recipient, size=size), dot_safe=True
    )


# -- against aiosmtpd ---------------------------------------------------------------------------


async def test_against_aiosmtpd_the_command_group_is_one_write_only_when_offered(
    aiosmtpd_server: tuple[_Handler, _LoggingController], pool_factory: list[SmtpPool]
) -> None:
    handler, controller = aiosmtpd_server
    pool = _pool(f"smtp://127.0.0.1:{controller.port}", pool_factory)
    for n in range(3):
        outcome = await _send(pool, f"r{n}@example.org")
        assert outcome.status == "sent", outcome
    assert handler.accepted == ["r0@example.org", "r1@example.org", "r2@example.org"]
    groups = _group_reads(controller.reads)
    assert len(groups) == 3, controller.reads
    together = [b"RCPT TO:" in g and b"DATA\r\n" in g for g in groups]
    if handler.pipelining:
        assert all(together), f"MAIL, RCPT and DATA not in one read: {controller.reads}"
    else:
        assert not any(together), f"commands sent ahead without PIPELINING: {controller.reads}"


async def test_against_aiosmtpd_a_refused_rcpt_is_bounced_and_the_connection_serves_the_next(
    aiosmtpd_server: tuple[_Handler, _LoggingController], pool_factory: list[SmtpPool]
) -> None:
    handler, controller = aiosmtpd_server
    handler.rcpt_replies["gone@example.org"] = "550 5.1.1 <gone@example.org>: user unknown"
    pool = _pool(f"smtp://127.0.0.1:{controller.port}", pool_factory)
    refused = await _send(pool, "gone@example.org")
    assert (refused.status, refused.phase, refused.code) == ("bounced", "rcpt", 550), refused
    assert (await _send(pool, "next@example.org")).status == "sent"
    assert handler.accepted == ["next@example.org"], "the refused recipient got no message"


async def test_against_aiosmtpd_a_4xx_on_mail_is_deferred(
    aiosmtpd_server: tuple[_Handler, _LoggingController], pool_factory: list[SmtpPool]
) -> None:
    handler, controller = aiosmtpd_server
    handler.mail_replies["busy@news.example"] = "451 4.3.0 try again later"
    pool = _pool(f"smtp://127.0.0.1:{controller.port}", pool_factory)
    outcome = await _send(pool, "a@example.org", sender="busy@news.example")
    assert (outcome.status, outcome.phase, outcome.code) == ("deferred", "mail", 451), outcome
    assert (await _send(pool, "b@example.org")).status == "sent"
    assert handler.accepted == ["b@example.org"]


async def test_against_aiosmtpd_a_554_after_the_data_is_classified(
    aiosmtpd_server: tuple[_Handler, _LoggingController], pool_factory: list[SmtpPool]
) -> None:
    handler, controller = aiosmtpd_server
    handler.dot_replies["p@example.org"] = "554 5.7.1 message refused by policy"
    pool = _pool(f"smtp://127.0.0.1:{controller.port}", pool_factory)
    outcome = await _send(pool, "p@example.org")
    assert (outcome.status, outcome.phase, outcome.policy) == ("failed", "data", True), outcome
    assert (await _send(pool, "q@example.org")).status == "sent"


# -- against the scripted server ----------------------------------------------------------------

both = pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "no-pipelining"])


@both
async def test_a_refused_rcpt_never_leads_to_the_body(
    pipelining: bool, pool_factory: list[SmtpPool]
) -> None:
    script = Script(
        pipelining=pipelining, rcpt_replies={"gone@example.org": "550 5.1.1 no such user"}
    )
    async with ScriptedServer(script) as mta:
        pool = _pool(mta.url, pool_factory)
        outcome = await _send(pool, "gone@example.org")
        assert (outcome.status, outcome.phase) == ("bounced", "rcpt"), outcome
        assert mta.taken == [], "no message data was sent"
        assert (await _send(pool, "ok@example.org")).status == "sent"
        assert [t.rcpts for t in mta.taken] == [["ok@example.org"]]
        if pipelining:
            assert b"RCPT TO:<gone@example.org>\r\nDATA\r\n" in b"".join(_group_reads(mta.reads))


async def test_a_354_after_every_rcpt_was_refused_is_ended_with_a_lone_dot(
    pool_factory: list[SmtpPool],
) -> None:
    """RFC 2920 §3.1: the client cannot assume DATA was refused; on 354 it sends a lone dot."""
    script = Script(
        rcpt_replies={"gone@example.org": "550 5.1.1 no such user"}, accept_data_without_rcpt=True
    )
    async with ScriptedServer(script) as mta:
        pool = _pool(mta.url, pool_factory)
        outcome = await _send(pool, "gone@example.org")
        assert (outcome.status, outcome.code) == ("bounced", 550), outcome
        assert [(t.rcpts, t.data, t.reply[:3]) for t in mta.taken] == [([], b"", "554")], (
            "only the empty message went after the 354, and the server refused it"
        )
        assert (await _send(pool, "ok@example.org")).status == "sent"
        assert len(mta.bodies_for("ok@example.org")) == 1


@both
async def test_a_4xx_on_mail_is_deferred_and_no_body_goes_out(
    pipelining: bool, pool_factory: list[SmtpPool]
) -> None:
    script = Script(pipelining=pipelining, mail_replies={"busy@news.example": "451 4.3.0 busy"})
    async with ScriptedServer(script) as mta:
        pool = _pool(mta.url, pool_factory)
        outcome = await _send(pool, "a@example.org", sender="busy@news.example")
        assert (outcome.status, outcome.phase, outcome.code) == ("deferred", "mail", 451), outcome
        assert mta.taken == []
        assert (await _send(pool, "a@example.org")).status == "sent"


@both
async def test_a_421_on_mail_closes_the_connection_and_the_next_send_reconnects(
    pipelining: bool, pool_factory: list[SmtpPool]
) -> None:
    script = Script(
        pipelining=pipelining, mail_replies={"slow@news.example": "421 4.7.0 slow down"}
    )
    async with ScriptedServer(script) as mta:
        pool = _pool(mta.url, pool_factory)
        outcome = await _send(pool, "a@example.org", sender="slow@news.example")
        assert (outcome.status, outcome.throttle) == ("deferred", True), outcome
        assert (await _send(pool, "a@example.org")).status == "sent"
        assert sum(1 for r in mta.reads if r.startswith(b"EHLO")) == 2, "a new connection"


@both
async def test_a_554_to_data_is_classified_and_no_body_goes_out(
    pipelining: bool, pool_factory: list[SmtpPool]
) -> None:
    script = Script(
        pipelining=pipelining, data_replies={"p@example.org": "554 5.7.1 refused by policy"}
    )
    async with ScriptedServer(script) as mta:
        pool = _pool(mta.url, pool_factory)
        outcome = await _send(pool, "p@example.org")
        assert (outcome.status, outcome.code, outcome.policy) == ("failed", 554, True), outcome
        assert mta.taken == []
        assert (await _send(pool, "ok@example.org")).status == "sent"


@both
async def test_a_reset_in_the_middle_of_the_data_is_deferred(
    pipelining: bool, pool_factory: list[SmtpPool]
) -> None:
    script = Script(pipelining=pipelining, drop_mid_data={"mid@example.org"})
    async with ScriptedServer(script) as mta:
        pool = _pool(mta.url, pool_factory)
        outcome = await _send(pool, "mid@example.org", size=400_000)
        assert mta.dropped == 1, "the server hung up before the final dot"
        # Reset with the final dot unread, or lost while part of it was still ours to write:
        # either way the server cannot have taken it.
        assert outcome.status == "deferred", outcome
        assert outcome.reply.startswith(
            (
                "connection reset by the server: it closed with the end of data unread",
                "connection lost before the end of data was written",
            )
        ), outcome.reply
        assert (await _send(pool, "ok@example.org")).status == "sent"


@both
async def test_a_hang_up_after_the_command_group_is_deferred_without_a_body(
    pipelining: bool, pool_factory: list[SmtpPool]
) -> None:
    script = Script(pipelining=pipelining, close_on_rcpt={"x@example.org"})
    async with ScriptedServer(script) as mta:
        pool = _pool(mta.url, pool_factory)
        outcome = await _send(pool, "x@example.org")
        assert (outcome.status, outcome.code) == ("deferred", None), outcome
        assert outcome.phase in {"mail", "rcpt"}, outcome
        assert mta.taken == []
        assert (await _send(pool, "ok@example.org")).status == "sent"


@both
async def test_no_reply_after_the_complete_end_of_data_is_unknown(
    pipelining: bool, pool_factory: list[SmtpPool]
) -> None:
    script = Script(pipelining=pipelining, silent_after_dot={"s@example.org"})
    async with ScriptedServer(script) as mta:
        pool = _pool(mta.url, pool_factory, timeout=0.5)
        outcome = await _send(pool, "s@example.org")
        assert len(mta.bodies_for("s@example.org")) == 1, "the server read the final dot"
        assert (outcome.status, outcome.phase) == ("unknown", "data"), outcome
        assert "Timed out" in outcome.reply


# -- over STARTTLS ------------------------------------------------------------------------------


def _self_signed(folder: Path) -> tuple[Path, Path]:
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


class _TrustingPool(SmtpPool):
    """The pool, trusting the test's own certificate (the one seam: how the client is built)."""

    def __init__(self, *, url: str, cert: Path) -> None:
        super().__init__(target=SmtpTarget(url), size=1, timeout=5.0)
        self._cert = cert

    def _client(self) -> aiosmtplib.SMTP:
        client = super()._client()
        client.cert_bundle = str(self._cert)
        return client


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "no-pipelining"])
async def test_over_starttls_the_transaction_runs_on_the_upgraded_connection(
    pipelining: bool, tmp_path: Path
) -> None:
    cert, key = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    handler = _Handler(pipelining=pipelining)
    handler.rcpt_replies["gone@example.org"] = "550 5.1.1 user unknown"
    controller = _LoggingController(handler, tls_context=context, require_starttls=True)
    controller.start()
    pool = _TrustingPool(url=f"smtp+starttls://127.0.0.1:{controller.port}", cert=cert)
    try:
        assert (await _send(pool, "a@example.org")).status == "sent"
        assert (await _send(pool, "gone@example.org")).status == "bounced"
        assert (await _send(pool, "b@example.org")).status == "sent"
        assert pool.pipelining is pipelining
    finally:
        await pool.close()
        controller.stop()
    assert handler.accepted == ["a@example.org", "b@example.org"]
    groups = _group_reads(controller.reads)
    assert len(groups) == 3, controller.reads
    assert all(b"DATA\r\n" in g for g in groups) is pipelining, controller.reads
