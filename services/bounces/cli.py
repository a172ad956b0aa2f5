"""``newsletter bounces``: run the receiver, classify files, measure the classifier."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Receive and classify bounces and complaints.", no_args_is_help=True)


@app.command()
def serve() -> None:
    """Run the bounce receiver: SMTP for return paths, HTTP for webhooks and probes."""
    from services.bounces import service
    from services.bounces.settings import load_bounces_settings
    from shared.logging import configure_logging

    settings = load_bounces_settings()
    configure_logging(service="bounces", level=settings.log_level, fmt=settings.log_format)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await service.run(settings, stop=stop)

    asyncio.run(main())


@app.command()
def classify(
    files: Annotated[
        list[Path], typer.Argument(help="Raw bounce messages (RFC 5322 files), or folders of them.")
    ],
) -> None:
    """Print one JSON line per recipient found: file, recipient, status, action, class, reason.

    A file where no recipient can be read still gets one line (``"recipient": null``).
    """
    import os

    from services.bounces.classifier import classify as classify_bytes

    secret = os.environ.get("NEWSLETTER_SECRET_KEY") or None
    for path in _expand(files):
        try:
            data = path.read_bytes()
        except OSError as err:
            line: dict[str, object] = {
                "file": str(path),
                "recipient": None,
                "status": "",
                "action": "",
                "class": "unknown",
                "reason": f"unreadable file: {err.strerror}",
            }
            typer.echo(json.dumps(line, ensure_ascii=False))
            continue
        for finding in classify_bytes(data, secret_key=secret):
            line = finding.as_line(str(path))
            if finding.delivery_id is not None:
                line["delivery_id"] = finding.delivery_id
            typer.echo(json.dumps(line, ensure_ascii=False))


def _expand(paths: list[Path]) -> list[Path]:
    expanded: list[Path] = []
    for path in paths:
        if path.is_dir():
            expanded.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        else:
            expanded.append(path)
    return expanded


@app.command()
def accuracy(
    corpus: Annotated[Path, typer.Argument(help="Folder holding labels.tsv")] = Path(
        "tests/fixtures/bounces"
    ),
    show_mistakes: Annotated[bool, typer.Option("--mistakes")] = False,
) -> None:
    """Accuracy of the classifier per class on a labelled corpus."""
    from services.bounces.corpus import evaluate, format_report

    report = evaluate(corpus)
    typer.echo(format_report(report))
    if show_mistakes:
        for mistake in report.mistakes:
            typer.echo(f"  {mistake}")


def run_service() -> None:
    serve()
