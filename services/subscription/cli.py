"""Commands of the subscription service; ``serve`` is its composition root."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from fastapi import FastAPI

    from services.subscription.policy import SignupPolicy
    from shared.settings import Settings

WORKERS_ENV = "NEWSLETTER_SUBSCRIPTION_WORKERS"


def server_options(
    settings: Settings, *, host: str | None = None, port: int | None = None
) -> dict[str, object]:
    """uvicorn's options for the service. The client address comes from X-Forwarded-For only
    when the peer is one of ``NEWSLETTER_FORWARDED_ALLOW_IPS`` (the public proxy)."""
    return {
        "host": host or settings.http_host,
        "port": port or settings.subscription_port,
        "log_config": None,
        "access_log": False,
        "proxy_headers": True,
        "forwarded_allow_ips": settings.forwarded_allow_ips,
        "lifespan": "on",
        "timeout_graceful_shutdown": 10,
    }


app = typer.Typer(help="The public signup pages and the admin API.", no_args_is_help=True)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Default: NEWSLETTER_HTTP_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="Default: NEWSLETTER_SUBSCRIPTION_PORT")] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Worker processes sharing the listening socket (uvicorn's supervisor). The "
            "per-address limit (one confirmation mail per interval) lives in the database; each "
            "worker gets NEWSLETTER_IP_LIMIT // N of the per-IP limit, so together they never "
            "allow more than the limit.",
        ),
    ] = 1,
) -> None:
    """Serve the signup form, confirmation, unsubscribe, preferences and the admin API.

    Stops cleanly on SIGTERM and SIGINT: open requests finish, then the lifespan closes the
    feedback consumer, the publisher, the AMQP connection and the database engine.
    """
    import os
    import signal

    import uvicorn

    from services.subscription.app import per_worker_ip_limit
    from shared.settings import SettingsError

    os.environ[WORKERS_ENV] = str(workers)  # read by every worker_app(), inherited by workers
    try:
        settings, policy = _load_configuration()
        per_worker_ip_limit(policy.ip_limit, workers)
    except (SettingsError, ValueError) as err:
        typer.echo(f"subscription: {err}", err=True)
        raise typer.Exit(2) from err
    options = server_options(settings, host=host, port=port)
    if workers > 1:
        # Each worker process builds its own app (engine, AMQP connection, publisher) from
        # the environment; the supervisor binds the socket once and restarts dead workers.
        uvicorn.run(f"{__name__}:worker_app", factory=True, workers=workers, **options)  # type: ignore[arg-type]
        return
    config = uvicorn.Config(worker_app(), **options)  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    # uvicorn handles SIGTERM/SIGINT (graceful shutdown, lifespan closed), then hands the
    # signal on to the handler that was installed before it: a no-op, so a requested stop
    # ends with exit status 0 instead of death by signal.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda *_: None)
    server.run()
    if not server.started:
        raise typer.Exit(1)


def _load_configuration() -> tuple[Settings, SignupPolicy]:
    from services.subscription.policy import load_policy
    from shared.settings import load_settings

    return load_settings(), load_policy()


def worker_app() -> FastAPI:
    """The app of one worker process, configured from the environment (a uvicorn factory)."""
    import os

    from prometheus_client import REGISTRY

    from services.subscription.app import create_app, freeze_startup_heap
    from shared.logging import configure_logging

    settings, policy = _load_configuration()
    configure_logging(service="subscription", level=settings.log_level, fmt=settings.log_format)
    workers = int(os.environ.get(WORKERS_ENV, "1"))
    app = create_app(settings, policy=policy, registry=REGISTRY, workers=workers)
    freeze_startup_heap()
    return app


def run_service() -> None:
    """``python -m services.subscription``: the same as ``newsletter subscription serve``."""
    import sys

    import click

    command = typer.main.get_command(app)
    # With one command Typer collapses the app into it; with more it is a group.
    args: list[str] = ["serve"] if isinstance(command, click.Group) else []
    command.main(args=[*args, *sys.argv[1:]], prog_name="python -m services.subscription")
