"""``newsletter report issue N``: the editorial analytics of one issue (issue 18).

Per article, readers' clicks per edition and their share of that edition's deliveries; per
edition, delivered, bounced, complaints and unsubscribes attributed to the issue; machines'
requests (HEAD, prefetch, scanners, bursts) shown apart. Aggregates only.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from services.renderer.analytics_report import IssueReport, issue_report
from shared.db.engine import create_engine, session_factory
from shared.logging import configure_logging
from shared.settings import DatabaseSettings

app = typer.Typer(help="Editorial analytics: clicks per article and edition.", no_args_is_help=True)


async def load_report(database_url: str, number: int) -> IssueReport:
    engine = create_engine(database_url)
    try:
        return await issue_report(session_factory(engine), issue=number)
    finally:
        await engine.dispose()


@app.command(name="issue")
def issue(
    number: Annotated[int, typer.Argument(help="The issue number (as in its header).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    csv_out: Annotated[
        Path | None, typer.Option("--csv", help="Also write one row per article and edition.")
    ] = None,
) -> None:
    """Clicks per article and edition of issue NUMBER, and what its deliveries became."""
    configure_logging(service="report", level="WARNING")
    settings = DatabaseSettings()
    report = asyncio.run(load_report(settings.database_url, number))
    if csv_out is not None:
        csv_out.write_text(report.csv(), encoding="utf-8")
    if as_json:
        typer.echo(json.dumps(report.as_json(), ensure_ascii=False, indent=2))
    else:
        typer.echo(report.text(), nl=False)
