"""``newsletter queues``: every queue of the suite with its depth, consumers and rates.

Reads RabbitMQ's management API where it is enabled and passive declares where it is not
(see :mod:`services.subscription.ops.queue_reader`); ``--watch`` redraws the table every few
seconds until interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from dataclasses import asdict

import typer

from services.subscription.ops.queue_reader import QueueStatsReader
from services.subscription.ops.queue_snapshots import QueueSnapshot, QueueStat, QueueStatsError

SOURCE_NOTES: dict[str, str] = {
    "management": "source: RabbitMQ management API",
    "rabbitmqctl": "source: rabbitmqctl on this machine (management API not available; "
    "depth/s from successive samples)",
    "amqp": "source: passive declares (management API not available: no unacked counts; "
    "depth/s from successive samples)",
}


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}/s" if value else "0/s"


def format_table(snapshot: QueueSnapshot) -> str:
    """The table ``newsletter queues`` prints (pure, so it can be tested)."""
    headers = ("queue", "ready", "unacked", "consumers", "in/s", "acked/s", "depth/s")
    rows: list[tuple[str, ...]] = []
    for stat in snapshot.queues:
        rows.append(_row(stat))
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [
        "  ".join(
            h.ljust(w) if i == 0 else h.rjust(w)
            for i, (h, w) in enumerate(zip(headers, widths, strict=True))
        )
    ]
    for row in rows:
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    lines.append(SOURCE_NOTES[snapshot.source])
    return "\n".join(lines)


def _row(stat: QueueStat) -> tuple[str, ...]:
    if not stat.exists:
        return (stat.name, "missing", "-", "-", "-", "-", "-")
    return (
        stat.name,
        _count(stat.ready),
        _count(stat.unacked),
        _count(stat.consumers),
        _plain_rate(stat.publish_rate),
        _plain_rate(stat.ack_rate),
        _rate(stat.depth_rate),
    )


def _plain_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}/s"


def to_json(snapshot: QueueSnapshot, *, one_line: bool = False) -> str:
    return json.dumps(
        {"source": snapshot.source, "queues": [asdict(q) for q in snapshot.queues]},
        indent=None if one_line else 2,
    )


async def _show(
    *, watch: bool, interval: float, as_json: bool, management_url: str, use_rabbitmqctl: bool
) -> None:
    from services.subscription.ops.queue_reader import QueueStatsSettings
    from services.subscription.ops.rabbitmqctl import local_rabbitmqctl
    from shared.settings import load_settings

    settings = load_settings()
    url = management_url or QueueStatsSettings().rabbitmq_management_url
    rabbitmqctl = local_rabbitmqctl(settings.amqp_url) if use_rabbitmqctl else None
    stop = _stop_on_first_interrupt()
    async with QueueStatsReader(
        amqp_url=settings.amqp_url, management_url=url, rabbitmqctl=rabbitmqctl
    ) as reader:
        while not stop.is_set():
            snapshot = await reader.read()
            # --watch --json prints JSON lines: one object per sample.
            text = to_json(snapshot, one_line=watch) if as_json else format_table(snapshot)
            if watch and not as_json and sys.stdout.isatty():
                typer.echo("\x1b[2J\x1b[H", nl=False)  # clear the terminal, cursor home
            typer.echo(text)
            if not watch:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)


def _stop_on_first_interrupt() -> asyncio.Event:
    """Ctrl-C ends the watch after the sample in progress and closes the connection cleanly.

    Cancelling the main task instead (asyncio.run's own handling) could land in the middle
    of the robust connection's set-up and leave the process hanging. A second Ctrl-C
    interrupts at once.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_interrupt() -> None:
        stop.set()
        loop.remove_signal_handler(signal.SIGINT)

    loop.add_signal_handler(signal.SIGINT, on_interrupt)
    return stop


def queues(
    watch: bool = typer.Option(False, "--watch", "-w", help="Redraw every --interval seconds."),
    interval: float = typer.Option(2.0, "--interval", min=0.2, help="Seconds between samples."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    management_url: str = typer.Option(
        "",
        "--management-url",
        help="RabbitMQ management API, e.g. http://user:pass@host:15672 ('none': never ask it). "
        "Default: NEWSLETTER_RABBITMQ_MANAGEMENT_URL, else the AMQP host on port 15672.",
    ),
    use_rabbitmqctl: bool = typer.Option(
        True,
        "--rabbitmqctl/--no-rabbitmqctl",
        help="Without the management API, ask rabbitmqctl when the broker runs on this "
        "machine (it knows unacked counts; passive declares do not).",
    ),
) -> None:
    """Show every queue with ready and unacked counts, consumers and rates."""
    from shared.logging import configure_logging

    configure_logging(service="queues", level="WARNING")
    try:
        asyncio.run(
            _show(
                watch=watch,
                interval=interval,
                as_json=as_json,
                management_url=management_url,
                use_rabbitmqctl=use_rabbitmqctl,
            )
        )
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    except QueueStatsError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from err
