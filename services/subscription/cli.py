"""Commands of the subscription service; ``serve`` is its composition root."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(help="The public signup pages and the admin API.", no_args_is_help=True)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Default: NEWSLETTER_HTTP_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="Default: NEWSLETTER_SUBSCRIPTION_PORT")] = None,
) -> None:
    """Serve the signup form, confirmation, unsubscribe, preferences and the admin API.

    Stops cleanly on SIGTERM and SIGINT: open requests finish, then the lifespan closes the
    feedback consumer, the publisher, the AMQP connection and the database engine.
    """
    import signal

    import uvicorn
    from prometheus_client import REGISTRY

    from services.subscription.app import create_app
    from services.subscription.policy import load_policy
    from shared.logging import configure_logging
    from shared.settings import SettingsError, load_settings

    try:
        settings = load_settings()
        policy = load_policy()
    except SettingsError as err:
        typer.echo(f"subscription: {err}", err=True)
        raise typer.Exit(2) from err
    configure_logging(service="subscription", level=settings.log_level, fmt=settings.log_format)
    config = uvicorn.Config(
        create_app(settings, policy=policy, registry=REGISTRY),
        host=host or settings.http_host,
        port=port or settings.subscription_port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    # uvicorn handles SIGTERM/SIGINT (graceful shutdown, lifespan closed), then hands the
    # signal on to the handler that was installed before it: a no-op, so a requested stop
    # ends with exit status 0 instead of death by signal.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda *_: None)
    server.run()
    if not server.started:
        raise typer.Exit(1)


def run_service() -> None:
    """``python -m services.subscription``: the same as ``newsletter subscription serve``."""
    import sys

    import click

    command = typer.main.get_command(app)
    # With one command Typer collapses the app into it; with more it is a group.
    args: list[str] = ["serve"] if isinstance(command, click.Group) else []
    command.main(args=[*args, *sys.argv[1:]], prog_name="python -m services.subscription")


def bench_signups(
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
) -> None:
    """Load test: start the service in its own process, fire concurrent signups from this one,
    check that none is lost and none duplicated, and print signups/s and p50/p99 latency."""
    import asyncio

    from services.subscription.signup_bench import BenchFailed, run_bench

    try:
        report = asyncio.run(
            run_bench(
                count=count,
                database_url=database_url,
                concurrency=concurrency,
                repeats=repeats,
                response_floor_s=response_floor,
            )
        )
    except BenchFailed as err:
        typer.echo(f"bench signups FAILED: {err}", err=True)
        raise typer.Exit(1) from err
    typer.echo(report)
