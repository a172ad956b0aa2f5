"""``newsletter queues``: queue depths for operators (being built by the operations work)."""

import typer


def queues() -> None:
    """Show every queue with ready and unacked counts, consumers and rates."""
    raise typer.Exit("not built yet")
