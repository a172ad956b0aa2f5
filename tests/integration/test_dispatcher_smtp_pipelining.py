"""ESMTP PIPELINING (RFC 2920) in the dispatcher's SMTP transaction, with and without it.

Two servers over real loopback sockets (``tests/support/pipelining_servers.py``), each run
with PIPELINING offered and not offered: aiosmtpd, and a small scripted asyncio server that
can misbehave where aiosmtpd cannot (354 to DATA after every recipient was refused, a
disconnect in the middle of the message or right after the command group). Both log every read
of the session outside the message data, so the tests see on the wire whether MAIL, RCPT and
DATA arrived in one read. Every test runs on asyncio's loop and on uvloop.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.dispatcher.outcomes import Outcome
from services.dispatcher.smtp import SmtpPool
from shared.settings import SmtpTarget
from tests.support.pipelining_servers import (
    LoggingController,
    Script,
    TrustingPool,
    WireHandler,
    asyncio_and_uvloop,
    group_reads,
    message,
    scripted_pool,
    self_signed,
)

pytestmark = pytest.mark.integration
event_loop_policy = asyncio_and_uvloop  # the fixture: every test on asyncio's loop and on uvloop

SENDER = "bounces@news.example"


@pytest.fixture(params=[True, False], ids=["pipelining", "no-pipelining"])
async def aiosmtpd(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[WireHandler, LoggingController, SmtpPool]]:
    """aiosmtpd with PIPELINING offered or not, and a one-connection pool on it."""
    handler = WireHandler(pipelining=request.param)
    controller = LoggingController(handler)
    controller.start()
    pool = SmtpPool(target=SmtpTarget(f"smtp://127.0.0.1:{controller.port}"), size=1, timeout=5)
    try:
        yield handler, controller, pool
    finally:
        await pool.close()
        controller.stop()


async def _send(
    pool: SmtpPool, recipient: str, *, sender: str = SENDER, size: int = 20_000
) -> Outcome:
    return await pool.send(
        sender=sender, recipient=recipient, data=message(recipient, size=size), dot_safe=True
    )


# -- against aiosmtpd ---------------------------------------------------------------------------


async def test_against_aiosmtpd_the_command_group_is_one_write_only_when_offered(
    aiosmtpd: tuple[WireHandler, LoggingController, SmtpPool],
) -> None:
    handler, controller, pool = aiosmtpd
    for n in range(3):
        outcome = await _send(pool, f"r{n}@example.org")
        assert outcome.status == "sent", outcome
    assert handler.accepted == ["r0@example.org", "r1@example.org", "r2@example.org"]
    groups = group_reads(controller.reads)
    assert len(groups) == 3, controller.reads
    together = [b"RCPT TO:" in g and b"DATA\r\n" in g for g in groups]
    if handler.pipelining:
        assert all(together), f"MAIL, RCPT and DATA not in one read: {controller.reads}"
    else:
        assert not any(together), f"commands sent ahead without PIPELINING: {controller.reads}"


async def test_against_aiosmtpd_a_refused_rcpt_is_bounced_and_the_connection_serves_the_next(
    aiosmtpd: tuple[WireHandler, LoggingController, SmtpPool],
) -> None:
    handler, _, pool = aiosmtpd
    handler.rcpt_replies["gone@example.org"] = "550 5.1.1 <gone@example.org>: user unknown"
    refused = await _send(pool, "gone@example.org")
    assert (refused.status, refused.phase, refused.code) == ("bounced", "rcpt", 550), refused
    assert (await _send(pool, "next@example.org")).status == "sent"
    assert handler.accepted == ["next@example.org"], "the refused recipient got no message"


async def test_against_aiosmtpd_a_4xx_on_mail_is_deferred(
    aiosmtpd: tuple[WireHandler, LoggingController, SmtpPool],
) -> None:
    handler, _, pool = aiosmtpd
    handler.mail_replies["busy@news.example"] = "451 4.3.0 try again later"
    outcome = await _send(pool, "a@example.org", sender="busy@news.example")
    assert (outcome.status, outcome.phase, outcome.code) == ("deferred", "mail", 451), outcome
    assert (await _send(pool, "b@example.org")).status == "sent"
    assert handler.accepted == ["b@example.org"]


async def test_against_aiosmtpd_a_554_after_the_data_is_classified(
    aiosmtpd: tuple[WireHandler, LoggingController, SmtpPool],
) -> None:
    handler, _, pool = aiosmtpd
    handler.dot_replies["p@example.org"] = "554 5.7.1 message refused by policy"
    outcome = await _send(pool, "p@example.org")
    assert (outcome.status, outcome.phase, outcome.policy) == ("failed", "data", True), outcome
    assert (await _send(pool, "q@example.org")).status == "sent"


# -- against the scripted server ----------------------------------------------------------------

both = pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "no-pipelining"])


@both
async def test_a_refused_rcpt_never_leads_to_the_body(pipelining: bool) -> None:
    script = Script(
        pipelining=pipelining, rcpt_replies={"gone@example.org": "550 5.1.1 no such user"}
    )
    async with scripted_pool(script) as (mta, pool):
        outcome = await _send(pool, "gone@example.org")
        assert (outcome.status, outcome.phase) == ("bounced", "rcpt"), outcome
        assert mta.taken == [], "no message data was sent"
        assert (await _send(pool, "ok@example.org")).status == "sent"
        assert [t.rcpts for t in mta.taken] == [["ok@example.org"]]
        if pipelining:
            assert b"RCPT TO:<gone@example.org>\r\nDATA\r\n" in b"".join(group_reads(mta.reads))


async def test_a_354_after_every_rcpt_was_refused_is_ended_with_a_lone_dot() -> None:
    """RFC 2920 §3.1: the client cannot assume DATA was refused; on 354 it sends a lone dot."""
    script = Script(
        rcpt_replies={"gone@example.org": "550 5.1.1 no such user"}, accept_data_without_rcpt=True
    )
    async with scripted_pool(script) as (mta, pool):
        outcome = await _send(pool, "gone@example.org")
        assert (outcome.status, outcome.code) == ("bounced", 550), outcome
        assert [(t.rcpts, t.data, t.reply[:3]) for t in mta.taken] == [([], b"", "554")], (
            "only the empty message went after the 354, and the server refused it"
        )
        assert (await _send(pool, "ok@example.org")).status == "sent"
        assert len(mta.bodies_for("ok@example.org")) == 1


@both
async def test_a_4xx_on_mail_is_deferred_and_no_body_goes_out(pipelining: bool) -> None:
    script = Script(pipelining=pipelining, mail_replies={"busy@news.example": "451 4.3.0 busy"})
    async with scripted_pool(script) as (mta, pool):
        outcome = await _send(pool, "a@example.org", sender="busy@news.example")
        assert (outcome.status, outcome.phase, outcome.code) == ("deferred", "mail", 451), outcome
        assert mta.taken == []
        assert (await _send(pool, "a@example.org")).status == "sent"


@both
async def test_a_421_on_mail_closes_the_connection_and_the_next_send_reconnects(
    pipelining: bool,
) -> None:
    script = Script(
        pipelining=pipelining, mail_replies={"slow@news.example": "421 4.7.0 slow down"}
    )
    async with scripted_pool(script) as (mta, pool):
        outcome = await _send(pool, "a@example.org", sender="slow@news.example")
        assert (outcome.status, outcome.throttle) == ("deferred", True), outcome
        assert (await _send(pool, "a@example.org")).status == "sent"
        assert sum(1 for r in mta.reads if r.startswith(b"EHLO")) == 2, "a new connection"


@both
async def test_a_554_to_data_is_classified_and_no_body_goes_out(pipelining: bool) -> None:
    script = Script(
        pipelining=pipelining, data_replies={"p@example.org": "554 5.7.1 refused by policy"}
    )
    async with scripted_pool(script) as (mta, pool):
        outcome = await _send(pool, "p@example.org")
        assert (outcome.status, outcome.code, outcome.policy) == ("failed", 554, True), outcome
        assert mta.taken == []
        assert (await _send(pool, "ok@example.org")).status == "sent"


@both
async def test_a_reset_in_the_middle_of_the_data_is_deferred(pipelining: bool) -> None:
    script = Script(pipelining=pipelining, drop_mid_data={"mid@example.org"})
    async with scripted_pool(script) as (mta, pool):
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
    pipelining: bool,
) -> None:
    script = Script(pipelining=pipelining, close_on_rcpt={"x@example.org"})
    async with scripted_pool(script) as (mta, pool):
        outcome = await _send(pool, "x@example.org")
        assert (outcome.status, outcome.code) == ("deferred", None), outcome
        assert outcome.phase in {"mail", "rcpt"}, outcome
        assert mta.taken == []
        assert (await _send(pool, "ok@example.org")).status == "sent"


@both
async def test_no_reply_after_the_complete_end_of_data_is_unknown(pipelining: bool) -> None:
    script = Script(pipelining=pipelining, silent_after_dot={"s@example.org"})
    async with scripted_pool(script, timeout=0.5) as (mta, pool):
        outcome = await _send(pool, "s@example.org")
        assert len(mta.bodies_for("s@example.org")) == 1, "the server read the final dot"
        assert (outcome.status, outcome.phase) == ("unknown", "data"), outcome
        assert "Timed out" in outcome.reply


# -- over STARTTLS ------------------------------------------------------------------------------


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "no-pipelining"])
async def test_over_starttls_the_transaction_runs_on_the_upgraded_connection(
    pipelining: bool, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    handler = WireHandler(pipelining=pipelining)
    handler.rcpt_replies["gone@example.org"] = "550 5.1.1 user unknown"
    controller = LoggingController(handler, tls_context=context, require_starttls=True)
    controller.start()
    pool = TrustingPool(url=f"smtp+starttls://127.0.0.1:{controller.port}", cert=cert)
    try:
        assert (await _send(pool, "a@example.org")).status == "sent"
        assert (await _send(pool, "gone@example.org")).status == "bounced"
        assert (await _send(pool, "b@example.org")).status == "sent"
        assert pool.pipelining is pipelining
    finally:
        await pool.close()
        controller.stop()
    assert handler.accepted == ["a@example.org", "b@example.org"]
    groups = group_reads(controller.reads)
    assert len(groups) == 3, controller.reads
    assert all(b"DATA\r\n" in g for g in groups) is pipelining, controller.reads
