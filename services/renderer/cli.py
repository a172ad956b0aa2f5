"""Commands of the renderer (composition root: ``run``) and the editors' ``issue`` commands."""

import typer

app = typer.Typer(help="Render issues and transactional mails.", no_args_is_help=True)
issue_app = typer.Typer(help="Editors' tools for weekly issues.", no_args_is_help=True)


@app.command()
def run() -> None:
    """Consume render commands from RabbitMQ."""
    raise typer.Exit("not built yet")


def run_service() -> None:
    run()


def bench_render() -> None:
    """Benchmark rendering (being built)."""
    raise typer.Exit("not built yet")
