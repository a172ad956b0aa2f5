"""``newsletter bench render|dispatch|feedback``: the benchmarks' commands (imports inside)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer


def _print(figures: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(figures, ensure_ascii=False))
        return
    for key, value in figures.items():
        typer.echo(f"{key}: {value}")


def bench_render(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the figures as one JSON object.")
    ] = False,
    path: Annotated[Path, typer.Option(help="The issue to render.")] = Path("deploy/sample-issue"),
    recipients: Annotated[int, typer.Option(help="Fills to time.")] = 20000,
    full_renders: Annotated[int, typer.Option(help="Full per-recipient renders to time.")] = 30,
) -> None:
    """Time rendering the three editions, and per-recipient filling against a full render."""
    from benchmarks.render import run_bench
    from shared.logging import configure_logging

    configure_logging(service="bench-render", level="WARNING")
    _print(run_bench(path, recipients=recipients, full_renders=full_renders), as_json=as_json)


def bench_dispatch(
    *,
    recipients: Annotated[int, typer.Option(help="Audience size (PostgreSQL).")] = 10_000,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    dkim: Annotated[bool, typer.Option("--dkim", help="Sign every message with DKIM.")] = False,
    connections: Annotated[int, typer.Option(help="SMTP connections of the dispatcher.")] = 16,
    processes: Annotated[int, typer.Option(help="Dispatcher processes on the queues.")] = 1,
) -> None:
    """A whole send end to end, against stdlib smtplib and the dispatcher's SMTP code alone."""
    import uvloop

    from benchmarks import dispatch

    figures = uvloop.run(
        dispatch.run_benchmark(
            recipients=recipients, dkim=dkim, connections=connections, processes=processes
        )
    )
    _print(figures, as_json=as_json)


def bench_feedback(
    *,
    count: Annotated[int, typer.Option(help="Policy bounces from one domain.")] = 5000,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """A policy-bounce storm: time to apply, addresses suppressed (0) and alerts raised (1)."""
    from benchmarks import feedback
    from shared.logging import configure_logging

    configure_logging(service="bench-feedback", level="WARNING")
    _print(feedback.run(count), as_json=as_json)


def bench_clicks(
    *,
    rate: Annotated[float, typer.Option(help="Clicks per second, steady (open loop).")] = 500.0,
    seconds: Annotated[float, typer.Option(help="How long to keep the rate.")] = 20.0,
    connections: Annotated[int, typer.Option(help="Keep-alive connections.")] = 32,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Latency of the tracked-link redirect (token check, counter) at a steady click rate."""
    import asyncio

    from benchmarks.clicks import run_bench
    from shared.logging import configure_logging

    configure_logging(service="bench-clicks", level="WARNING")
    figures = asyncio.run(run_bench(rate=rate, seconds=seconds, connections=connections))
    _print(figures, as_json=as_json)
