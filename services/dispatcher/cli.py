"""Commands of the dispatcher (composition root: ``run``) and of send control and dead letters.

``newsletter dispatcher run``, ``newsletter send status|pause|resume|cancel|repair ID``,
``newsletter send list``, ``newsletter send reschedule ID --at ...`` and
``newsletter dlq list|replay``.
"""

from __future__ import annotations

import asyncio
import json
import signal
from contextlib import suppress
from typing import Annotated

import typer

app = typer.Typer(help="Deliver rendered mail over SMTP.", no_args_is_help=True)
send_app = typer.Typer(help="Watch and control sends.", no_args_is_help=True)
dlq_app = typer.Typer(help="Inspect and replay dead letters.", no_args_is_help=True)


def _settings() -> object:
    from services.dispatcher.settings import load_dispatcher_settings
    from shared.settings import SettingsError

    try:
        return load_dispatcher_settings()
    except SettingsError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err


@app.command()
def run() -> None:
    """Plan sends and deliver mail (until SIGTERM or SIGINT)."""
    from services.dispatcher import service
    from services.dispatcher.settings import DispatcherSettings
    from shared.logging import configure_logging

    settings = _settings()
    assert isinstance(settings, DispatcherSettings)
    configure_logging(service="dispatcher", level=settings.log_level, fmt=settings.log_format)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await service.run(settings, stop=stop, clock=settings.clock)

    # uvloop roughly halves the event loop's own cost per message (callbacks, sockets).
    import uvloop

    uvloop.run(main())


def run_service() -> None:
    run()


async def _with_sessions(action: object) -> object:
    from services.dispatcher.settings import DispatcherSettings
    from shared.db.engine import create_engine, session_factory

    settings = _settings()
    assert isinstance(settings, DispatcherSettings)
    engine = create_engine(settings.database_url)
    try:
        return await action(session_factory(engine), settings)  # type: ignore[operator]
    finally:
        await engine.dispose()


@send_app.command("status")
def send_status(
    send_id: str,
    follow: Annotated[bool, typer.Option("--follow", help="Refresh until the send ends.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 2.0,
    window: Annotated[
        float, typer.Option(help="Seconds of recent sending the current rate is measured over.")
    ] = 30.0,
) -> None:
    """Progress of a send per edition: counts, percentage, rate, time left, top reasons."""
    from services.dispatcher import progress_view, sends, warmup
    from services.dispatcher.errors import SendNotFound
    from shared.clock import SYSTEM_CLOCK
    from shared.send_progress import progress_of_send

    async def action(sessions: object, _settings: object) -> None:
        while True:
            async with sessions() as session:  # type: ignore[operator]
                progress = await progress_of_send(
                    session=session, send_id=send_id, rate_window_s=window
                )
            if progress is None:
                typer.echo(f"error: no send {send_id}", err=True)
                raise typer.Exit(1)
            typer.echo("\n".join(progress_view.lines(progress)))
            for line in await warmup.describe(
                sessions,  # type: ignore[arg-type]
                settings=_settings,  # type: ignore[arg-type]
                now=SYSTEM_CLOCK.now(),
            ):
                typer.echo(line)
            with suppress(SendNotFound):  # still planning: no send row yet
                ledger_view = await sends.report(sessions, send_id=send_id)  # type: ignore[arg-type]
                typer.echo(
                    f"ledger: open={ledger_view.open} redriven={ledger_view.redriven} "
                    f"({ledger_view.redriven_deliveries} deliveries)"
                )
            if not follow or progress.status in {"done", "cancelled"}:
                return
            await asyncio.sleep(interval)

    asyncio.run(_with_sessions(action))


def _control(send_id: str, action_name: str) -> None:
    from services.dispatcher import sends
    from services.dispatcher.errors import SendNotFound
    from shared.messaging.publisher import Publisher
    from shared.messaging.schemas import SendControlled
    from shared.messaging.topology import SEND_CONTROLLED, connect

    async def action(sessions: object, settings: object) -> None:
        try:
            status = await sends.set_status(
                sessions,  # type: ignore[arg-type]
                send_id=send_id,
                action=action_name,
            )
        except SendNotFound as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(1) from err
        connection = await connect(settings.amqp_url)  # type: ignore[attr-defined]
        try:
            publisher = await Publisher.open(connection)
            await publisher.publish_event(
                SendControlled(send_id=send_id, action=action_name),
                routing_key=SEND_CONTROLLED,
            )
        finally:
            await connection.close()
        typer.echo(f"send {send_id} {status}")

    asyncio.run(_with_sessions(action))


@send_app.command("repair")
def send_repair(
    send_id: str,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Take every queued delivery as lost now (the queues were purged), whatever "
            "its deadline and the queue's depth. Live leases and deferrals still wait.",
        ),
    ] = False,
) -> None:
    """Re-drive the deliveries of a running send whose jobs are gone, now; print what it did."""
    from prometheus_client import CollectorRegistry

    from services.dispatcher import sends
    from services.dispatcher.errors import SendNotFound
    from services.dispatcher.metrics import DispatcherMetrics
    from services.dispatcher.planner import Planner
    from services.dispatcher.reconciler import Reconciler
    from services.dispatcher.service import work_queue_depth
    from services.dispatcher.settings import DispatcherSettings
    from shared.db.engine import create_engine, session_factory
    from shared.messaging.publisher import Publisher
    from shared.messaging.topology import connect

    settings = _settings()
    assert isinstance(settings, DispatcherSettings)

    async def action() -> None:
        engine = create_engine(settings.database_url)
        sessions = session_factory(engine)
        try:
            before = await sends.report(sessions, send_id=send_id)
        except SendNotFound as err:
            await engine.dispose()
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(1) from err
        connection = await connect(settings.amqp_url)
        try:
            planner = Planner(
                settings=settings,
                engine=engine,
                sessions=sessions,
                publisher=await Publisher.open(connection),
                raw_channel=None,
                metrics=DispatcherMetrics.create(CollectorRegistry()),
            )
            done = await Reconciler(
                engine=engine,
                planner=planner,
                queue_depth=work_queue_depth(connection, prefetch=settings.dispatch_prefetch),
            ).reconcile(send_id=send_id, force=force)
        finally:
            await connection.close()
            await engine.dispose()
        typer.echo(
            f"send {send_id} status={before.status}: due retries {done.due_retries}, "
            f"lost jobs re-driven {done.lost_queued}, expired leases re-driven "
            f"{done.expired_leases}, jobs published {done.published}"
            + (", finished" if done.finished else "")
        )
        if done.relay_failed:
            typer.echo("  the broker did not take the jobs: they wait in the outbox", err=True)
            raise typer.Exit(1)
        if done.backlog_kept:
            typer.echo(
                f"  queued deliveries past their deadline were left alone: the queue holds "
                f"{done.queue_depth} jobs, enough for every queued row (--force re-drives them)"
            )
        if before.status != "running":
            typer.echo(f"  only a running send is repaired; this one is {before.status}")

    asyncio.run(action())


@send_app.command("pause")
def send_pause(send_id: str) -> None:
    """Hold the remaining deliveries of a send (nothing is lost)."""
    _control(send_id, "pause")


@send_app.command("resume")
def send_resume(send_id: str) -> None:
    """Continue a paused send (delivered mail is never sent again)."""
    _control(send_id, "resume")


@send_app.command("cancel")
def send_cancel(send_id: str) -> None:
    """Cancel the deliveries of a send that have not gone out yet."""
    _control(send_id, "cancel")


@send_app.command("list")
def send_list(
    status: Annotated[
        list[str] | None,
        typer.Option(help="Only sends in this status (scheduled, running, done, ...); repeatable."),
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many sends.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Sends, newest first: scheduled ones (with their start), running and finished ones."""
    from services.dispatcher import sends

    async def action(sessions: object, _settings: object) -> None:
        found = await sends.listing(
            sessions,  # type: ignore[arg-type]
            statuses=status or (),
            limit=limit,
        )
        if as_json:
            typer.echo(json.dumps([s.as_dict() for s in found], indent=2))
            return
        if not found:
            typer.echo("no sends")
        for s in found:
            when = ""
            if s.scheduled_at is not None:
                when = f" at {s.scheduled_at:%Y-%m-%d %H:%M} UTC"
                if s.schedule_tz:
                    when += f" ({s.schedule_tz})"
            local = f" local {s.local_time}" if s.local_time else ""
            typer.echo(
                f"{s.send_id}  {s.status:<9} {s.issue_key} {s.intent}{when}{local} "
                f"deliveries={s.total}"
            )

    asyncio.run(_with_sessions(action))


@send_app.command("reschedule")
def send_reschedule(
    send_id: str,
    at: Annotated[str, typer.Option("--at", help="New start, e.g. '2026-12-07 09:00'.")],
    tz: Annotated[str, typer.Option("--tz", help="Zone of --at (IANA name).")] = "UTC",
) -> None:
    """Move a scheduled send that has not started yet."""
    from services.dispatcher import scheduler
    from services.dispatcher.errors import SendNotFound
    from shared.clock import BadMoment, local_moment

    try:
        moment = local_moment(at, tz=tz)
    except BadMoment as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err

    async def action(sessions: object, _settings: object) -> None:
        try:
            await scheduler.reschedule(
                sessions,  # type: ignore[arg-type]
                send_id=send_id,
                at=moment,
                tz=tz,
            )
        except (SendNotFound, scheduler.NotScheduled) as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(1) from err
        typer.echo(f"send {send_id} scheduled at {moment:%Y-%m-%d %H:%M} UTC ({tz})")

    asyncio.run(_with_sessions(action))


@send_app.command("warmup")
def send_warmup(
    domain: str,
    caps: Annotated[
        str,
        typer.Option(help="Daily caps per receiving domain, e.g. 50,100,200 (default: setting)."),
    ] = "",
    start: Annotated[
        str | None, typer.Option(help="First day of the ramp, YYYY-MM-DD (default: today, UTC).")
    ] = None,
    done: Annotated[
        bool, typer.Option("--done", help="The domain is warm: lift the caps.")
    ] = False,
) -> None:
    """Mark a sending domain new: cap what it sends per receiving domain per day on a ramp."""
    from datetime import date

    from services.dispatcher import warmup
    from shared.clock import SYSTEM_CLOCK
    from shared.settings import SettingsError

    async def action(sessions: object, _settings: object) -> None:
        if done:
            lifted = await warmup.mark_warm(sessions, domain=domain)  # type: ignore[arg-type]
            typer.echo(f"{domain}: {'caps lifted' if lifted else 'was not warming up'}")
            return
        try:
            first = date.fromisoformat(start) if start else SYSTEM_CLOCK.now().date()
            row = await warmup.mark_new(
                sessions,  # type: ignore[arg-type]
                domain=domain,
                started_on=first,
                caps=caps,
            )
        except (ValueError, SettingsError) as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from err
        typer.echo(f"{row.domain} warms up from {row.started_on} (caps {row.caps or 'setting'})")

    asyncio.run(_with_sessions(action))


@dlq_app.command("list")
def dlq_list(
    limit: Annotated[int, typer.Option(help="At most this many messages.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Show dead letters (left in the queue) with their reason."""
    from services.dispatcher import dead_letters
    from services.dispatcher.settings import DispatcherSettings

    settings = _settings()
    assert isinstance(settings, DispatcherSettings)
    letters = asyncio.run(dead_letters.peek(settings.amqp_url, limit=limit))
    for letter in letters:
        if as_json:
            typer.echo(json.dumps(letter.as_dict(), ensure_ascii=False))
        else:
            typer.echo(
                f"{letter.message_id or '-'} type={letter.type or '-'} "
                f"routing_key={letter.routing_key or '-'} reason={letter.reason}"
            )
    typer.echo(f"{len(letters)} dead letter(s) shown", err=True)


@dlq_app.command("replay")
def dlq_replay(
    limit: Annotated[int, typer.Option(help="Replay at most this many messages.")] = 100,
    message_id: Annotated[
        str | None, typer.Option("--id", help="Replay only the message with this id.")
    ] = None,
) -> None:
    """Publish dead letters back to their original routing key, then remove them."""
    from services.dispatcher import dead_letters
    from services.dispatcher.settings import DispatcherSettings

    settings = _settings()
    assert isinstance(settings, DispatcherSettings)
    count = asyncio.run(dead_letters.replay(settings.amqp_url, limit=limit, message_id=message_id))
    typer.echo(f"{count} dead letter(s) replayed")
