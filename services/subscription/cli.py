"""Commands of the subscription service (composition root: ``serve``)."""

import typer

app = typer.Typer(help="The public signup pages and the admin API.", no_args_is_help=True)


@app.command()
def serve() -> None:
    """Serve the signup form, confirmation, unsubscribe and admin API."""
    raise typer.Exit("not built yet")


def run_service() -> None:
    serve()


def bench_signups() -> None:
    """Load test: concurrent signups from a second process (being built)."""
    raise typer.Exit("not built yet")
