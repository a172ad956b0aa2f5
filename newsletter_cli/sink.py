"""``newsletter sink``: the built-in Maildir SMTP sink on its own, until interrupted.

The same sink ``newsletter demo`` and the tests use (:mod:`newsletter_cli.smtp_sink`): point
``NEWSLETTER_SMTP_URL`` at it when running the services by hand, or run it in a container in
place of Mailpit (``deploy/ci/compose.ci.yaml``). Every accepted message becomes one file under
``<maildir>/new/``.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from newsletter_cli.smtp_sink import SmtpSink


def sink(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="SMTP port to listen on.")] = 1025,
    maildir: Annotated[Path, typer.Option(help="Maildir that receives every message.")] = Path(
        "var/mail"
    ),
) -> None:
    """Run the Maildir SMTP sink alone until interrupted (Ctrl-C or SIGTERM)."""
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stop)
    try:
        server = SmtpSink(host=host, port=port, maildir=maildir, keep=False).start()
    except (OSError, RuntimeError) as err:
        typer.echo(f"sink failed to start on {host}:{port}: {err}", err=True)
        raise typer.Exit(1) from err
    typer.echo(f"SMTP sink listening on {server.url}, storing mail in {maildir}/new/", err=True)
    try:
        stop.wait()
    finally:
        server.stop()
        typer.echo("SMTP sink stopped", err=True)
