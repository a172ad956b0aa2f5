"""``newsletter bench faults [--recipients N] [--json]``: the fault table, one row per scenario."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from benchmarks.faults.drill import ScenarioResult

COLUMNS = (
    ("scenario", "scenario"),
    ("audience", "audience"),
    ("sent", "sent"),
    ("deferred_then_sent", "deferred then sent"),
    ("bounced", "bounced"),
    ("failed", "failed"),
    ("unknown", "unknown"),
    ("duplicates", "duplicates received"),
    ("lost", "lost"),
    ("stuck", "stuck"),
    ("seconds", "time s"),
    ("msgs_per_s", "msg/s"),
    ("vs_clean", "vs clean"),
    ("ended", "ended"),
    ("fault", "fault"),
    ("verdict", "verdict"),
)
RETRY_ROOM_S = 300.0
# The bar for throughput while 10 % of RCPTs are answered 451.
MIN_451_VS_CLEAN = 0.5


def table(results: list[ScenarioResult]) -> str:
    """A Markdown table of the results, then each scenario's notes."""
    lines = [
        "| " + " | ".join(title for _, title in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for result in results:
        values = result.as_dict()
        lines.append("| " + " | ".join(str(values[key]) for key, _ in COLUMNS) + " |")
    lines.append("")
    for result in results:
        extra = [f"ledger {result.statuses}", f"send {result.send_status}"]
        extra.append(f"{result.smtp_rcpts} RCPTs seen by the server")
        extra.append(f"broker up in {result.broker_boot_s}s")
        extra.append(f"load average {result.load_before} before it")
        lines.append(f"- {result.scenario} ({result.title}): " + "; ".join(extra + result.notes))
    return "\n".join(lines)


def _with_throughput_ratio(results: list[ScenarioResult]) -> None:
    """Each scenario's throughput over the clean baseline's, measured in the same run; the
    10 %-451 row fails below :data:`MIN_451_VS_CLEAN`."""
    clean = next((r for r in results if r.scenario == "clean"), None)
    if clean is None or not clean.msgs_per_s:
        return
    for result in results:
        if not result.msgs_per_s:
            continue
        result.vs_clean = round(result.msgs_per_s / clean.msgs_per_s, 2)
        if result.scenario == "defer-451" and result.vs_clean < MIN_451_VS_CLEAN:
            result.notes.append(f"throughput below {MIN_451_VS_CLEAN} of the clean baseline")
            if result.verdict == "pass":
                result.verdict = "FAIL"


def bench_faults(
    *,
    recipients: Annotated[int, typer.Option(help="Audience size of every scenario.")] = 20_000,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    scenario: Annotated[
        list[str] | None, typer.Option(help="Run only these scenarios (repeat the option).")
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(help="Seconds a scenario may take (default: N/50 + 300, room for retries)."),
    ] = None,
    stall: Annotated[
        float, typer.Option(help="End a scenario when nothing moved for this many seconds.")
    ] = 120.0,
    outage: Annotated[float, typer.Option(help="Seconds a killed node stays down.")] = 30.0,
    logs: Annotated[
        str | None, typer.Option(help="Keep each scenario's SMTP and dispatcher logs here.")
    ] = None,
) -> None:
    """Run issue 12's fault scenarios, each on its own broker nodes and database."""
    import asyncio
    from pathlib import Path

    from benchmarks.faults.drill import run_scenario
    from benchmarks.faults.scenarios import by_key

    try:
        chosen = by_key(scenario)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    # A 451 is drawn again at every attempt: one reader in ten thousand meets four in a row,
    # which the drills' tiers (10s, then 1m repeated) bring back after 3 min 10 s.
    limit = timeout if timeout is not None else recipients / 50 + RETRY_ROOM_S
    results: list[ScenarioResult] = []
    for item in chosen:
        typer.echo(f"running {item.key}: {item.title} ...", err=True)
        result = asyncio.run(
            run_scenario(
                item,
                recipients=recipients,
                timeout_s=limit,
                stall_s=stall,
                outage_s=outage,
                logs=Path(logs) if logs else None,
            )
        )
        results.append(result)
        typer.echo(
            f"  {result.ended} in {result.seconds}s: sent {result.sent}, "
            f"lost {result.lost}, stuck {result.stuck}, duplicates {result.duplicates}, "
            f"fault {result.fault}",
            err=True,
        )
    _with_throughput_ratio(results)
    if as_json:
        typer.echo(
            json.dumps({"recipients": recipients, "scenarios": [r.as_dict() for r in results]})
        )
    else:
        typer.echo(table(results))
    if any(r.verdict != "pass" for r in results):
        raise typer.Exit(1)
