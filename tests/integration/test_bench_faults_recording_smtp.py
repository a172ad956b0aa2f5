"""The recording SMTP server of ``newsletter bench faults``, over a real socket.

The fault table is only as true as its witness: every accepted copy is logged with its
Message-ID, a 451 is logged as such, and a connection dropped in the middle of DATA leaves the
client without a reply and the message out of the accepted ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest

from benchmarks.faults.recording_smtp import SmtpRecord
from tests.support.ports import free_port

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def recording_server(
    log: Path, *, drop_data: float = 0.0, defer_rcpt: float = 0.0
) -> Iterator[int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.faults.recording_smtp", "--port", str(port),
         "--log", str(log), "--drop-data", str(drop_data), "--defer-rcpt", str(defer_rcpt)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        yield port
    finally:
        process.terminate()
        assert process.wait(10) == 0


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "smtp.log"


def message(to: str, message_id: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "news@example.org"
    mail["To"] = to
    mail["Subject"] = "Weekly digest"
    mail["Message-ID"] = message_id
    mail.set_content("The council met on Tuesday.\n" * 4000)  # ~110 KB: more than one window
    return mail


async def test_every_accepted_copy_is_recorded_with_its_message_id(log: Path) -> None:
    with recording_server(log) as port:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as client:
            await client.send_message(message("a@example.org", "<1@example.org>"))
            await client.send_message(message("a@example.org", "<1@example.org>"))
            await client.send_message(message("b@example.org", "<2@example.org>"))
    record = SmtpRecord.read(log)
    assert record.accepted == {
        "a@example.org": ["<1@example.org>", "<1@example.org>"],
        "b@example.org": ["<2@example.org>"],
    }
    assert record.duplicates() == 1
    assert record.rcpt_commands == 3
    assert not record.deferred
    assert not record.dropped


async def test_a_deferred_rcpt_is_recorded_and_nothing_is_accepted(log: Path) -> None:
    with recording_server(log, defer_rcpt=1.0) as port:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as client:
            with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
                await client.send_message(message("a@example.org", "<1@example.org>"))
    assert refused.value.recipients[0].code == 451
    record = SmtpRecord.read(log)
    assert record.deferred == {"a@example.org"}
    assert record.accepted == {}


async def test_a_connection_dropped_mid_data_gets_no_reply_and_is_not_accepted(log: Path) -> None:
    with recording_server(log, drop_data=1.0) as port:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=5)
        await client.connect()
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await client.send_message(message("a@example.org", "<1@example.org>"))
    record = SmtpRecord.read(log)
    assert record.dropped == {"a@example.org"}
    assert record.accepted == {}


async def read_to_the_end(reader: asyncio.StreamReader) -> None:
    while await reader.read(1024):
        pass


async def test_a_drop_is_a_reset_even_when_the_whole_message_was_sent(log: Path) -> None:
    """A small message and its final dot fit in the kernel's buffers at once; the server must
    still leave them unread and reset, never close after taking them (the client would see
    a plain end of stream after its final dot: an outcome it must call unknown)."""
    with recording_server(log, drop_data=1.0) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            await reader.readline()  # 220
            envelope = (b"EHLO client", b"MAIL FROM:<s@example.org>", b"RCPT TO:<a@example.org>")
            for command in envelope:
                writer.write(command + b"\r\n")
                while (await reader.readline())[3:4] == b"-":
                    pass
            writer.write(b"DATA\r\n")
            assert (await reader.readline()).startswith(b"354")
            writer.write(b"Message-ID: <2@example.org>\r\n\r\nhello\r\n.\r\n")
            await writer.drain()
            with pytest.raises(ConnectionResetError):
                await read_to_the_end(reader)
        finally:
            writer.close()
    record = SmtpRecord.read(log)
    assert record.dropped == {"a@example.org"}
    assert record.accepted == {}
