"""The baselines of ``newsletter bench dispatch`` send what they claim to send.

Over real SMTP sockets: to the suite's aiosmtpd sink (every message arrives, each to its own
recipient, byte for byte) and to the benchmark's own fast sink (its count is the figure the
benchmark checks). Rates are printed by the benchmark, never asserted here.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from benchmarks import audience, baselines, dispatch
from newsletter_cli.smtp_sink import MaildirHandler, SmtpSink
from tests.support.ports import free_port

COUNT = 12


def _messages() -> list[tuple[bytes, bool]]:
    return baselines.prebuilt_messages(
        [(language, *audience.edition(language)) for language in audience.LANGUAGES],
        secret=dispatch.SECRET,
        dkim_key=None,
    )


@pytest.mark.parametrize("baseline", ["smtplib", "wire"])
async def test_each_baseline_delivers_every_prebuilt_message_once(
    smtp_sink: SmtpSink, baseline: str
) -> None:
    messages = _messages()
    if baseline == "smtplib":
        rate = await baselines.stdlib_smtplib(smtp_sink.url, [m for m, _ in messages], count=COUNT)
    else:
        rate, pipelined = await baselines.dispatcher_wire(
            smtp_sink.url, messages, count=COUNT, connections=4
        )
        assert not pipelined, "aiosmtpd does not offer PIPELINING"
    assert rate > 0
    received = smtp_sink.handler.received
    assert sorted(r.rcpt_tos[0] for r in received) == sorted(
        f"reader{n}@example.org" for n in range(COUNT)
    )
    by_recipient = {r.rcpt_tos[0]: r.data for r in received}
    for n in range(COUNT):
        assert by_recipient[f"reader{n}@example.org"].endswith(messages[n % 3][0])


async def test_the_fast_sink_counts_what_both_baselines_pushed() -> None:
    messages = _messages()
    with dispatch._sink() as (smtp_url, sink):
        await baselines.stdlib_smtplib(smtp_url, [m for m, _ in messages], count=COUNT)
        _, pipelined = await baselines.dispatcher_wire(
            smtp_url, messages, count=COUNT, connections=3
        )
        sink.terminate()
        assert sink.stdout is not None
        received, _ = dispatch._sink_report(sink.stdout.read().splitlines(), {})
    assert received == 2 * COUNT
    assert pipelined, "the benchmark's sink offers PIPELINING and the wire baseline used it"


class _RefusesOne(MaildirHandler):
    """Refuses one recipient with a permanent 550, accepts the others."""

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address == "reader5@example.org":
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"


async def test_the_wire_baseline_refuses_to_report_a_rate_when_a_message_was_not_sent() -> None:
    refusal = r"1 of 12 not sent, first: bounced 550"
    with (
        SmtpSink(port=free_port(), handler=_RefusesOne()) as sink,
        pytest.raises(RuntimeError, match=refusal),
    ):
        await baselines.dispatcher_wire(sink.url, _messages(), count=COUNT, connections=2)
