"""``newsletter demo``: the whole path on one machine (being built)."""

from __future__ import annotations

import typer


def demo() -> None:
    """Run signup, confirmation and a weekly send end to end on embedded defaults."""
    raise typer.Exit("not built yet")
