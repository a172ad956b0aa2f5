"""``newsletter db``: database migrations, a one-shot step before the services start."""

from __future__ import annotations

import typer

from shared.db.engine import is_sqlite
from shared.db.migrate import upgrade as run_upgrade
from shared.logging import configure_logging
from shared.settings import DatabaseSettings

app = typer.Typer(help="Database migrations.", no_args_is_help=True)


@app.command()
def upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Apply the migrations to NEWSLETTER_DATABASE_URL (SQLite or PostgreSQL)."""
    settings = DatabaseSettings()
    configure_logging(service="db")
    run_upgrade(settings.database_url, revision)
    engine = "sqlite" if is_sqlite(settings.database_url) else "postgresql"
    typer.echo(f"database ({engine}) migrated to {revision}")
