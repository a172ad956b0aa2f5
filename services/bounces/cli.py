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
    from shared.settings import SettingsError

    try:
        settings = load_bounces_settings()
    except SettingsError as err:  # a refusal to start is a message, not a traceback
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
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
    corpus: Annotated[
        Path | None,
        typer.Argument(
            help="A folder holding labels.tsv, or one holding frozen/ and working/ "
            "(default: tests/fixtures/bounces, both parts)."
        ),
    ] = None,
    show_mistakes: Annotated[
        bool, typer.Option("--mistakes", help="List the working part's mistakes.")
    ] = False,
) -> None:
    """Accuracy of the classifier: frozen and working figures side by side.

    The frozen part is never used to write or tune a rule, so its mistakes are never listed:
    only its summary figures are printed.
    """
    from services.bounces.corpus import evaluate, format_report, format_side_by_side

    root = corpus or Path("tests/fixtures/bounces")
    if (root / "labels.tsv").is_file():
        report = evaluate(root)
        typer.echo(format_report(report))
        if show_mistakes and root.name != "frozen":
            for mistake in report.mistakes:
                typer.echo(f"  {mistake}")
        return
    parts = {
        name: evaluate(root / name) if (root / name / "labels.tsv").is_file() else None
        for name in ("frozen", "working")
    }
    if all(report is None for report in parts.values()):
        typer.echo(f"no labels.tsv under {root} (nor {root}/frozen, {root}/working)", err=True)
        raise typer.Exit(code=2)
    typer.echo(format_side_by_side(parts))
    working = parts["working"]
    if show_mistakes and working is not None:
        for mistake in working.mistakes:
            typer.echo(f"  working/{mistake}")


def run_service() -> None:
    """``python -m services.bounces``: ``serve`` through typer, so refusals exit cleanly."""
    app(["serve"], prog_name="python -m services.bounces")
