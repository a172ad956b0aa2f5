"""``newsletter bounces``: the bounce receiver and the classifier (being built)."""

import typer

app = typer.Typer(help="Receive and classify bounces and complaints.", no_args_is_help=True)


@app.command()
def serve() -> None:
    """Run the bounce receiver."""
    raise typer.Exit("not built yet")
