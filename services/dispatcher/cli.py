"""Commands of the dispatcher (composition root: ``run``) and of send control and dead letters."""

import typer

app = typer.Typer(help="Deliver rendered mail over SMTP.", no_args_is_help=True)
send_app = typer.Typer(help="Watch and control sends.", no_args_is_help=True)
dlq_app = typer.Typer(help="Inspect and replay dead letters.", no_args_is_help=True)


@app.command()
def run() -> None:
    """Plan sends and deliver mail."""
    raise typer.Exit("not built yet")


def run_service() -> None:
    run()


def bench_dispatch() -> None:
    """Benchmark a whole send end to end (being built)."""
    raise typer.Exit("not built yet")
