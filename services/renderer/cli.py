"""Commands of the renderer (composition root: ``run``) and the editors' ``issue`` commands.

``newsletter renderer run`` and ``newsletter issue check|preview|send``. Imports happen inside
the commands to keep start-up fast.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from services.renderer.settings import RendererSettings

app = typer.Typer(help="Render issues and transactional mails.", no_args_is_help=True)
issue_app = typer.Typer(help="Editors' tools for weekly issues.", no_args_is_help=True)

IssuePath = Annotated[Path, typer.Argument(help="The issue folder (en.md, be.md, ru.md).")]


def _settings(*, offline: bool = False) -> RendererSettings:
    """The renderer's settings; offline tools (check, preview) fall back to demo secrets."""
    from services.renderer.settings import load_renderer_settings
    from shared.settings import SettingsError

    try:
        return load_renderer_settings()
    except SettingsError as err:
        if offline:
            return load_renderer_settings(mode="demo")
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err


def _quiet_logging() -> None:
    from shared.logging import configure_logging

    configure_logging(service="renderer-cli", level="WARNING")


@app.command()
def run() -> None:
    """Consume render commands and serve the pages and probes (until SIGTERM or SIGINT)."""
    from services.renderer import service
    from shared.logging import configure_logging

    settings = _settings()
    configure_logging(service="renderer", level=settings.log_level, fmt=settings.log_format)

    async def main() -> None:
        from prometheus_client import REGISTRY

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await service.run(settings, stop=stop, registry=REGISTRY)

    asyncio.run(main())


def run_service() -> None:
    run()


@issue_app.command()
def check(  # noqa: PLR0917 - Typer maps each parameter to a command-line option
    path: IssuePath,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    spam: Annotated[bool, typer.Option(help="Run SpamAssassin's local tests.")] = True,
    segments: Annotated[
        str, typer.Option(help="Comma-separated segments the send would go to.")
    ] = "en,be,ru",
    fallback: Annotated[
        list[str] | None,
        typer.Option(help="SEGMENT=LANGUAGE: a segment without its edition gets this one."),
    ] = None,
    links: Annotated[
        bool, typer.Option("--links", help="Also check that every web link answers (HTTP).")
    ] = False,
    links_timeout: Annotated[float, typer.Option(help="Seconds each link may take.")] = 10.0,
    links_concurrency: Annotated[int, typer.Option(help="Links asked at a time.")] = 8,
) -> None:
    """Validate an issue: the readiness verdict ``issue send`` uses, the matrix, the preflight.

    Each problem is printed as ``file:line:column: what is wrong (what to do)`` on stderr; exits
    1 when the issue is not ready for these segments and fallbacks, 2 on bad options.
    """
    from services.renderer.catalogs import Publication, Templates
    from services.renderer.editor_tools import (
        check_as_json,
        check_issue,
        check_links_of,
        print_check,
    )
    from services.renderer.errors import IssueFormatError, IssueNotReady
    from services.renderer.sending import parse_fallbacks, parse_segments

    _quiet_logging()
    try:
        settings = _settings(offline=True)
        result = check_issue(
            path,
            settings=settings,
            templates=Templates(publication=Publication.from_settings(settings)),
            spam=spam,
            segments=parse_segments(segments),
            fallbacks=parse_fallbacks(fallback or []),
        )
    except IssueFormatError as err:  # not a folder, or no language file in it
        for problem in err.problems:
            typer.echo(str(problem), err=True)
        raise typer.Exit(1) from err
    except IssueNotReady as err:  # malformed --segments or --fallback
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    if links:
        result = check_links_of(result, timeout=links_timeout, concurrency=links_concurrency)
    if as_json:
        typer.echo(check_as_json(result))
    else:
        print_check(result, echo=typer.echo, err=lambda line: typer.echo(line, err=True))
    if not result.ok:
        raise typer.Exit(1)


@issue_app.command()
def preview(
    path: IssuePath,
    out: Annotated[Path, typer.Option("--out", help="Folder for the .html, .txt and .eml files.")],
) -> None:
    """Write each language's .html, .txt and complete .eml, as sent to a sample recipient."""
    from services.renderer.catalogs import Publication, Templates
    from services.renderer.editor_tools import write_previews
    from services.renderer.errors import IssueFormatError

    _quiet_logging()
    try:
        settings = _settings(offline=True)
        templates = Templates(publication=Publication.from_settings(settings))
        written = write_previews(path, out, settings=settings, templates=templates)
    except IssueFormatError as err:
        for problem in err.problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2) from err
    for target in written:
        typer.echo(str(target))


@issue_app.command()
def send(  # noqa: PLR0917 - Typer maps each parameter to a command-line option
    path: IssuePath,
    segments: Annotated[
        str, typer.Option(help="Comma-separated segments to send to.")
    ] = "en,be,ru",
    fallback: Annotated[
        list[str] | None,
        typer.Option(help="SEGMENT=LANGUAGE: a segment without its edition gets this one."),
    ] = None,
    test_to: Annotated[
        str | None, typer.Option(help="Send every edition to this address only, '[TEST]'.")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait until every delivery is final.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits.")] = 600.0,
    spam: Annotated[bool, typer.Option(help="Run SpamAssassin's local tests first.")] = True,
    only_new: Annotated[
        bool,
        typer.Option(
            "--only-new",
            help="The issue was sent: mail only readers who have not received it "
            "(new subscribers since, deliveries that failed for good).",
        ),
    ] = False,
    resend_all: Annotated[
        bool,
        typer.Option(
            "--resend-all",
            help="The issue was sent: mail every reader again (asks you to type the number).",
        ),
    ] = False,
    yes_resend: Annotated[
        int | None,
        typer.Option(
            "--yes-resend",
            metavar="ISSUE",
            help="--resend-all for scripts: the issue number, typed back without a prompt.",
        ),
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            help="Start later, e.g. '2026-12-07 09:00' (rendered and checked now; "
            "newsletter send list|cancel|reschedule).",
        ),
    ] = None,
    tz: Annotated[
        str | None, typer.Option("--tz", help="Time zone of --at (IANA name); default UTC.")
    ] = None,
    local_time: Annotated[
        str | None,
        typer.Option(
            "--local-time",
            metavar="HH:MM",
            help="Each reader gets it at this hour in their own time zone.",
        ),
    ] = None,
    tracking: Annotated[
        bool,
        typer.Option(
            help="Article links through counted redirects (aggregate, no reader identified); "
            "--no-tracking links straight to their targets.",
        ),
    ] = True,
) -> None:
    """Check the issue, then ask the renderer to render and the dispatcher to send it.

    An issue goes to its readers once: a second send of the same issue number is refused
    unless --only-new or --resend-all says what to do.
    """
    from services.renderer.editor_tools import send_issue
    from services.renderer.errors import IssueFormatError, IssueNotReady
    from services.renderer.issue_sends import IssueIdentity, SendRefused, intent_of
    from services.renderer.sending import parse_fallbacks, parse_schedule, parse_segments
    from shared.clock import SYSTEM_CLOCK

    _quiet_logging()
    settings = _settings()

    def confirm_resend(identity: IssueIdentity) -> int | None:
        if yes_resend is not None:
            return yes_resend
        if not sys.stdin.isatty():
            return None
        typed = typer.prompt(
            f"This mails every reader of {identity.label} again. "
            f"Type the issue number ({identity.number}) to go on",
            default="",
            show_default=False,
        )
        return int(typed) if typed.strip().isdigit() else None

    try:
        intent = intent_of(
            only_new=only_new, resend_all=resend_all or yes_resend is not None, test=bool(test_to)
        )
        done = send_issue(
            path,
            settings=settings,
            segments=parse_segments(segments),
            fallbacks=parse_fallbacks(fallback or []),
            test_to=test_to,
            wait=wait,
            timeout=timeout,
            spam=spam,
            echo=typer.echo,
            intent=intent,
            confirm_resend=confirm_resend,
            schedule=parse_schedule(at=at, tz=tz, local_time=local_time, clock=SYSTEM_CLOCK),
            tracking=tracking,
        )
    except IssueFormatError as err:
        for problem in err.problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2) from err
    except (IssueNotReady, SendRefused) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    if not done:
        raise typer.Exit(1)
