"""The two baselines of ``newsletter bench dispatch``, pushing prebuilt bytes to the same sink.

* :func:`stdlib_smtplib`: the simplest possible client, stdlib :mod:`smtplib` on one
  connection, ``sendmail`` of prebuilt bytes (what any script could do; it still dot-stuffs
  and normalizes line endings per message, as smtplib always does).
* :func:`dispatcher_wire`: the dispatcher's own SMTP code, :class:`SmtpPool` and its
  transaction with the dispatcher's number of connections, on prebuilt bytes, with no queue,
  no database, no composing and no log line.

Both send ``count`` messages, cycling through ``messages`` (one per edition language, built
once, DKIM-signed once if the run signs), each to a different recipient address.
"""

from __future__ import annotations

import asyncio
import smtplib
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from services.dispatcher import mime
from services.dispatcher.composer import Composer, Recipient
from services.dispatcher.settings import DispatcherSettings
from services.dispatcher.smtp import SmtpPool
from shared.settings import SmtpTarget

SENDER = "bounces+bench@example.org"


def prebuilt_messages(
    editions: Sequence[tuple[str, str, str, str]], *, secret: str, dkim_key: Path | None
) -> list[tuple[bytes, bool]]:
    """One finished message per ``(language, subject, html, text)`` and whether it is dot-safe,
    composed as the dispatcher composes them (signed if ``dkim_key`` is given)."""
    settings = DispatcherSettings(
        mode="test", secret_key=secret, dkim_private_key_path=dkim_key, dkim_domain="example.org"
    )
    composer = Composer(settings=settings)
    built = []
    for n, (language, subject, html, text) in enumerate(editions):
        envelope = composer.envelope(subject=subject, language=language, campaign="bench")
        template = mime.build_template(envelope=envelope, text=text, html_body=html)
        recipient = Recipient(n, n, f"reader{n}@example.org", f"c{n}")
        built.append((composer.render(template, composer.values(recipient)), template.dot_safe))
    return built


def _stdlib_push(smtp_url: str, messages: Sequence[bytes], count: int) -> float:
    target = urlsplit(smtp_url)
    with smtplib.SMTP(target.hostname or "127.0.0.1", target.port or 25, timeout=30) as client:
        client.ehlo()
        started = time.perf_counter()
        for n in range(count):
            client.sendmail(SENDER, [f"reader{n}@example.org"], messages[n % len(messages)])
        elapsed = time.perf_counter() - started
    return count / elapsed


async def stdlib_smtplib(smtp_url: str, messages: Sequence[bytes], *, count: int) -> float:
    """(a) Messages per second of stdlib smtplib on one connection (on a thread of its own)."""
    return await asyncio.to_thread(_stdlib_push, smtp_url, messages, count)


async def dispatcher_wire(
    smtp_url: str, messages: Sequence[tuple[bytes, bool]], *, count: int, connections: int
) -> tuple[float, bool]:
    """(b) Messages per second of :class:`SmtpPool` with ``connections`` connections, and
    whether its connections pipelined (the sink offers PIPELINING, as the dispatcher sees it).

    ``connections`` senders share the pool as the dispatcher's workers do; connecting is
    inside the timing, as it is for the dispatcher. Raises ``RuntimeError`` if any message is
    not accepted (the figure would not be a rate of sent mail).
    """
    pool = SmtpPool(target=SmtpTarget(smtp_url), size=connections, timeout=30)
    numbers = iter(range(count))
    refused: list[str] = []

    async def sender() -> None:
        for n in numbers:
            data, dot_safe = messages[n % len(messages)]
            outcome = await pool.send(
                sender=SENDER, recipient=f"reader{n}@example.org", data=data, dot_safe=dot_safe
            )
            if outcome.status != "sent":
                refused.append(f"{outcome.status} {outcome.code}: {outcome.reply}")

    started = time.perf_counter()
    try:
        await asyncio.gather(*(sender() for _ in range(connections)))
        elapsed = time.perf_counter() - started
        pipelined = pool.pipelining
    finally:
        await pool.close()
    if refused:
        raise RuntimeError(f"{len(refused)} of {count} not sent, first: {refused[0]}")
    return count / elapsed, pipelined
