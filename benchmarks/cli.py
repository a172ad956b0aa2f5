"""``newsletter bench render|dispatch|capacity|feedback|signups``: the benchmarks' commands (imports
inside)."""

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
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            typer.echo(f"{key}:")  # one line each (the runs of --compare-dkim)
            for item in value:
                typer.echo(f"  {json.dumps(item, ensure_ascii=False)}")
        else:
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
    compare_dkim: Annotated[
        bool,
        typer.Option(
            "--compare-dkim",
            help="Run unsigned and signed sends in turn (end to end only, one sink) and print"
            " each run and signed/unsigned of the medians.",
        ),
    ] = False,
    dkim_rounds: Annotated[
        int, typer.Option(help="With --compare-dkim: sends of each kind (at least 2).")
    ] = 3,
    dkim_algorithm: Annotated[
        str, typer.Option(help="The DKIM key: rsa (RSA-2048) or ed25519 (RFC 8463).")
    ] = "rsa",
    connections: Annotated[int, typer.Option(help="SMTP connections of the dispatcher.")] = 16,
    processes: Annotated[int, typer.Option(help="Dispatcher processes on the queues.")] = 1,
) -> None:
    """A whole send end to end, against stdlib smtplib and the dispatcher's SMTP code alone."""
    import uvloop

    from benchmarks import dispatch

    if dkim_algorithm not in {"rsa", "ed25519"}:
        raise typer.BadParameter("choose rsa or ed25519", param_hint="--dkim-algorithm")
    if dkim_rounds < 2:
        raise typer.BadParameter("at least 2 of each, for a median", param_hint="--dkim-rounds")
    if compare_dkim:
        figures = uvloop.run(
            dispatch.run_dkim_comparison(
                recipients=recipients,
                connections=connections,
                processes=processes,
                dkim_algorithm=dkim_algorithm,
                rounds=dkim_rounds,
            )
        )
    else:
        figures = uvloop.run(
            dispatch.run_benchmark(
                recipients=recipients,
                dkim=dkim,
                connections=connections,
                processes=processes,
                dkim_algorithm=dkim_algorithm,
            )
        )
    _print(figures, as_json=as_json)


def bench_capacity(
    *,
    recipients: Annotated[int, typer.Option(help="Audience size (PostgreSQL).")] = 10_000,
    variants: Annotated[
        str, typer.Option(help="Comma-separated: unsigned, rsa (RSA-2048 DKIM), ed25519.")
    ] = "unsigned",
    connections: Annotated[int, typer.Option(help="SMTP connections per dispatcher.")] = 16,
    processes: Annotated[int, typer.Option(help="Dispatcher processes on the queues.")] = 1,
    queue_jobs: Annotated[
        int, typer.Option(help="DeliverIssue jobs for the broker-memory probe (0: skip).")
    ] = 20_000,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """CPU ms per message of the dispatcher, RabbitMQ, PostgreSQL and the sink; RSS; WAL; sizes."""
    import uvloop

    from benchmarks import capacity

    chosen = tuple(v.strip() for v in variants.split(",") if v.strip())
    if not chosen or any(v not in capacity.VARIANTS for v in chosen):
        raise typer.BadParameter("choose from unsigned, rsa, ed25519", param_hint="--variants")
    figures = uvloop.run(
        capacity.run_capacity(
            recipients=recipients,
            variants=chosen,
            connections=connections,
            processes=processes,
            queue_jobs=queue_jobs,
        )
    )
    if not as_json:
        typer.echo(capacity.summary(figures))
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
    pixel: Annotated[
        bool, typer.Option("--pixel", help="Load the open pixel instead of the redirect.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Latency of the tracked-link redirect (token check, counter) at a steady click rate."""
    import asyncio

    from benchmarks.clicks import run_bench
    from shared.logging import configure_logging

    configure_logging(service="bench-clicks", level="WARNING")
    figures = asyncio.run(
        run_bench(rate=rate, seconds=seconds, connections=connections, pixel=pixel)
    )
    _print(figures, as_json=as_json)


def bench_signups(  # noqa: PLR0917 (one parameter per command-line option)
    count: Annotated[int, typer.Option(help="How many signups to fire")] = 10_000,
    database_url: Annotated[
        str | None,
        typer.Option(help="Database to use (migrated first); default NEWSLETTER_DATABASE_URL"),
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Requests in flight at once")] = 200,
    repeats: Annotated[
        float, typer.Option(help="Share of extra signups repeating an address (duplicates test)")
    ] = 0.02,
    response_floor: Annotated[
        float, typer.Option(help="NEWSLETTER_RESPONSE_FLOOR_S for the service under test")
    ] = 0.2,
    workers: Annotated[int, typer.Option(help="Worker processes of the service under test")] = 1,
    profile: Annotated[
        Path | None,
        typer.Option(
            help="Profile the service during the load, save the samples here and print where "
            "a signup's CPU goes"
        ),
    ] = None,
    profiler: Annotated[
        str,
        typer.Option(
            help="py-spy: samples of every worker during the load (CPU only, nothing paused); "
            "cprofile: one worker under cProfile from start to stop (slower, counts every call)"
        ),
    ] = "py-spy",
    log_level: Annotated[
        str, typer.Option(help="NEWSLETTER_LOG_LEVEL of the service (INFO as in production)")
    ] = "WARNING",
) -> None:
    """Load test: start the service in its own process, fire concurrent signups from this one,
    check that none is lost and none duplicated, and print signups/s and p50/p99 latency."""
    import asyncio

    from benchmarks.signup_profile import ProfilerMissing
    from benchmarks.signups import BenchFailed, run_bench

    try:
        report = asyncio.run(
            run_bench(
                count=count,
                database_url=database_url,
                concurrency=concurrency,
                repeats=repeats,
                response_floor_s=response_floor,
                workers=workers,
                profile=profile,
                profiler=profiler,
                log_level=log_level,
            )
        )
    except (BenchFailed, ProfilerMissing) as err:
        typer.echo(f"bench signups FAILED: {err}", err=True)
        raise typer.Exit(1) from err
    finally:
        if profiler == "cprofile" and profile is not None and profile.exists():
            from benchmarks.signups import top_functions

            typer.echo(top_functions(profile))
    typer.echo(report)
