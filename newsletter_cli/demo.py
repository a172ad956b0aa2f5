"""``newsletter demo``: the whole path of a mail on one machine, with no browser.

It starts the built-in SMTP sink (a Maildir under ``./var/mail/``) and the three services as
separate processes on embedded defaults (SQLite under ``./var/``), signs up one subscriber per
language and one who ticks two editions (English and Russian) through the real HTTP form,
confirms each through the link in its confirmation mail, sends the sample issue (one mail per
chosen edition), waits for every delivery, shows that the same ``issue send`` again is refused
and mails no one, lets each reader follow the article link of each issue mail (a link scanner
and a HEAD request follow it too, and are not counted), prints what arrived where, stops what
it started and prints the issue's click report (``newsletter report issue 50``, aggregates
only). RabbitMQ is the one outside part: a reachable one is used, a locally installed
``rabbitmq-server`` is started, or the demo stops and says how to get one.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import httpx
import typer

from newsletter_cli.broker import BrokerUnavailable, drop_vhost, ensure_broker, private_vhost_url
from newsletter_cli.forms import Form, post_forms
from newsletter_cli.mail_checks import kind_of, problems_of
from newsletter_cli.mailbox_reader import StoredMail, read_maildir
from newsletter_cli.processes import ServiceFailed, ServiceProcess, free_port
from newsletter_cli.smtp_sink import SmtpSink
from shared.db.migrate import upgrade
from shared.settings import DatabaseSettings

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_ISSUE = REPO_ROOT / "deploy" / "sample-issue"


@dataclass(frozen=True)
class Reader:
    page: str  # the language of the signup page (and of the confirmation mail)
    address: str
    editions: tuple[str, ...]  # the editions ticked on the form


READERS: tuple[Reader, ...] = (
    Reader("en", "reader.en@example.org", ("en",)),
    Reader("be", "chytach.be@example.org", ("be",)),
    Reader("ru", "chitatel.ru@example.org", ("ru",)),
    Reader("en", "reader.en-ru@example.org", ("en", "ru")),
)
ISSUE_MAILS = sum(len(r.editions) for r in READERS)
TIME_TRAP_WAIT_S = 3.5  # the signup form refuses posts faster than a person types


class DemoFailed(RuntimeError):
    """A step of the demo did not do what it should; the message says which."""


@dataclass
class DemoRun:
    var_dir: Path
    issue: Path
    timeout_s: float

    @property
    def maildir(self) -> Path:
        return self.var_dir / "mail"

    @property
    def database_url(self) -> str:
        return f"sqlite:///{(self.var_dir / 'demo.db').resolve()}"


def demo(
    var_dir: Annotated[Path, typer.Option(help="Where the database, logs and mail go.")] = Path(
        "var"
    ),
    issue: Annotated[Path, typer.Option(help="The weekly issue folder to send.")] = SAMPLE_ISSUE,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each stage.")] = 180.0,
) -> None:
    """Run signup, confirmation and a weekly send end to end on embedded defaults."""
    run = DemoRun(var_dir=var_dir, issue=issue, timeout_s=timeout)
    try:
        asyncio.run(_demo(run))
    except (DemoFailed, ServiceFailed, BrokerUnavailable) as err:
        typer.echo(f"demo failed: {err}", err=True)
        raise typer.Exit(1) from err


def say(text: str) -> None:
    typer.echo(text)


async def _demo(run: DemoRun) -> None:
    for stale in (run.maildir, run.var_dir / "logs"):
        shutil.rmtree(stale, ignore_errors=True)
    for db_file in run.var_dir.glob("demo.db*"):
        db_file.unlink()
    run.var_dir.mkdir(parents=True, exist_ok=True)

    base_amqp = DemoSettings().amqp_url
    await ensure_broker(base_amqp, say=say)
    amqp_url = private_vhost_url(base_amqp)
    say("1/6 database: migrating " + run.database_url)
    await asyncio.to_thread(upgrade, run.database_url)

    sink = SmtpSink(maildir=run.maildir).start()
    say(f"2/6 SMTP sink listening on {sink.url}, storing mail in {run.maildir}/")
    ports = {name: free_port() for name in ("subscription", "renderer", "dispatcher")}
    public_url = f"http://127.0.0.1:{ports['subscription']}"
    env = {
        "NEWSLETTER_MODE": "demo",
        "NEWSLETTER_SECRET_KEY": secrets.token_urlsafe(48),
        "NEWSLETTER_ADMIN_TOKEN": secrets.token_urlsafe(24),
        "NEWSLETTER_DATABASE_URL": run.database_url,
        "NEWSLETTER_AMQP_URL": amqp_url,
        "NEWSLETTER_SMTP_URL": sink.url,
        "NEWSLETTER_PUBLIC_URL": public_url,
        "NEWSLETTER_SUBSCRIPTION_PORT": str(ports["subscription"]),
        "NEWSLETTER_RENDERER_PROBE_PORT": str(ports["renderer"]),
        "NEWSLETTER_DISPATCHER_PROBE_PORT": str(ports["dispatcher"]),
        "NEWSLETTER_LOG_FORMAT": "json",
        "NEWSLETTER_VAR_DIR": str(run.var_dir),
        # The Maildir then holds exactly the path's mails: a confirmation and an issue each.
        "NEWSLETTER_WELCOME_MAIL": "false",
    }
    services = [
        ServiceProcess(
            name=name,
            args=["-m", f"services.{name}"],
            ready_url=f"http://127.0.0.1:{ports[name]}/readyz",
            log_path=run.var_dir / "logs" / f"{name}.log",
            env=env,
        )
        for name in ("subscription", "renderer", "dispatcher")
    ]
    try:
        for service in services:
            service.start()
        for service in services:
            await service.wait_ready(timeout=run.timeout_s)
        say("3/6 services ready: " + ", ".join(f"{s.name} ({s.ready_url})" for s in services))
        await _sign_up_and_confirm(run, public_url=public_url, sink=sink)
        await _send_issue(run, env=env, sink=sink)
        await _show_archive(public_url=public_url, internal_port=ports["renderer"])
        await _readers_click(run, public_url=public_url)
        _report(run)
    finally:
        for service in reversed(services):
            service.stop()
        sink.stop()
        drop_vhost(amqp_url)
        say(f"services and SMTP sink stopped; logs in {run.var_dir / 'logs'}/")
    await _click_report(run)


class DemoSettings(DatabaseSettings):
    """The demo reads only where RabbitMQ is; everything else it sets up itself."""

    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"


async def _sign_up_and_confirm(run: DemoRun, *, public_url: str, sink: SmtpSink) -> None:
    clients = [httpx.AsyncClient(base_url=public_url, timeout=15.0) for _ in READERS]
    try:
        forms: list[Form] = []
        for reader, client in zip(READERS, clients, strict=True):
            page = await client.get("/", params={"lang": reader.page})
            _expect(page, f"signup form ({reader.page})")
            forms.append(_signup_form(page.text, base_url=str(page.url)))
        await asyncio.sleep(TIME_TRAP_WAIT_S)
        for reader, client, form in zip(READERS, clients, forms, strict=True):
            email_field = next(
                (name for name, kind in form.input_types.items() if kind == "email"), "email"
            )
            language_field = next(
                (name for name, value in form.checkboxes if value in reader.editions),
                "languages",
            )
            pairs = form.filled(
                {email_field: reader.address}, check={language_field: set(reader.editions)}
            )
            answer = await client.post(form.action, data=_multi(pairs))
            _expect(answer, f"signup of {reader.address}")
        say(
            f"4/6 signed up {len(READERS)} readers through the form: "
            + ", ".join(f"{r.address} ({'+'.join(r.editions)})" for r in READERS)
        )

        mails = await _wait_for_mail(run, want={r.address: 1 for r in READERS})
        for reader, client in zip(READERS, clients, strict=True):
            confirmation = mails[reader.address][0]
            links = confirmation.links("/confirm?token=")
            if not links:
                raise DemoFailed(f"no confirmation link in the mail to {reader.address}")
            page = await client.get(links[0])
            _expect(page, f"confirmation page ({reader.address})")
            form = _only_post_form(page.text, base_url=str(page.url), what="confirm")
            answer = await client.post(form.action, data=_multi(form.filled({})))
            _expect(answer, f"confirmation of {reader.address}")
        say(f"   confirmed all {len(READERS)} through the links in their confirmation mails")
    finally:
        for client in clients:
            await client.aclose()


async def _send_issue(run: DemoRun, *, env: dict[str, str], sink: SmtpSink) -> None:
    say(f"5/6 sending {run.issue} to the en, be and ru segments (one mail per chosen edition)")
    before = len(read_maildir(run.maildir))
    done = await _issue_send(run, env=env)
    for line in done.stdout.splitlines():
        say("   " + line)
    if done.returncode != 0:
        raise DemoFailed(f"`newsletter issue send` exited {done.returncode}: {done.stderr[-2000:]}")
    deadline = time.monotonic() + run.timeout_s
    while len(read_maildir(run.maildir)) < before + ISSUE_MAILS:
        if time.monotonic() > deadline:
            raise DemoFailed("the issue mails did not all arrive")
        await asyncio.sleep(0.2)
    # The same command again (an easy slip) is refused: the issue has gone out.
    arrived = len(read_maildir(run.maildir))
    again = await _issue_send(run, env=env)
    if again.returncode != 2 or "already has 1 send(s)" not in again.stderr:
        raise DemoFailed(
            f"a second `issue send` of the same issue was not refused ({again.returncode}): "
            f"{again.stdout[-1000:]} {again.stderr[-1000:]}"
        )
    if len(read_maildir(run.maildir)) != arrived:
        raise DemoFailed("the refused second send mailed someone")
    first_line = again.stderr.splitlines()[0].removeprefix("error: ")
    say(f"   the same `issue send` again is refused, no mail sent: {first_line}")


async def _show_archive(*, public_url: str, internal_port: int) -> None:
    """The archive and each edition's web page, on the public origin (the subscription app
    forwards the archive's paths to the renderer; deploy/nginx does the same in production)."""
    async with httpx.AsyncClient(base_url=public_url, timeout=15.0) as client:
        for lang in ("en", "be", "ru"):
            archive = await client.get(f"/{lang}/")
            _expect(archive, f"archive ({lang})")
            pages = sorted(
                set(
                    re.findall(rf'href="({re.escape(public_url)}/{lang}/issues/\d+)"', archive.text)
                )
            )
            if not pages:
                raise DemoFailed(f"the {lang} archive lists no issue")
            for url in pages:
                _expect(await client.get(url), f"issue page {url}")
            if f":{internal_port}" in archive.text:
                raise DemoFailed(f"the {lang} archive links the renderer's internal port")
            say(f"   archive ({lang}): {public_url}/{lang}/  issue page: {', '.join(pages)}")
        sitemap = await client.get("/sitemap.xml")
        _expect(sitemap, "sitemap")
    say(f"   one public origin: {public_url}/ (signup) and {public_url}/sitemap.xml")


BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
SCANNER = "Mozilla/5.0 (compatible; Barracuda Sentinel)"


async def _readers_click(run: DemoRun, *, public_url: str) -> None:
    """Each reader follows the first article link of each issue mail; a link scanner (by its
    User-Agent) and a HEAD request follow them too and are filtered, not counted."""
    followed = 0
    async with httpx.AsyncClient(timeout=15.0) as client:
        for mail in read_maildir(run.maildir):
            if kind_of(mail) != "issue":
                continue
            links = mail.links(f"{public_url}/{mail.language}/r/")
            if not links:
                raise DemoFailed(f"{mail.path}: no tracked article link")
            agent = f"{BROWSER} {mail.recipient}"  # one browser per reader
            answer = await client.get(links[0], headers={"user-agent": agent})
            if answer.status_code != 302 or not answer.headers.get("location"):
                raise DemoFailed(f"tracked link {links[0]} answered {answer.status_code}")
            await client.get(links[0], headers={"user-agent": SCANNER})
            await client.head(links[0], headers={"user-agent": agent})
            followed += 1
    say(
        f"   {followed} readers followed an article link (redirects to the article's target); "
        "a link scanner and a HEAD request did too (filtered, not counted)"
    )


async def _click_report(run: DemoRun) -> None:
    from newsletter_cli.report import load_report

    report = await load_report(run.database_url, 50)
    say("clicks of issue 50, aggregate (no reader identified):")
    for line in report.text().splitlines():
        say("   " + line)
    say(
        f"   the same as JSON: NEWSLETTER_DATABASE_URL={run.database_url} "
        "newsletter report issue 50 --json"
    )


async def _issue_send(run: DemoRun, *, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "newsletter_cli.main",
        "issue",
        "send",
        str(run.issue),
        "--wait",
        "--timeout",
        str(int(run.timeout_s)),
    ]
    return await asyncio.to_thread(
        subprocess.run,
        command,
        env={**_os_environ(), **env},
        capture_output=True,
        text=True,
        timeout=run.timeout_s + 30,
    )


def _report(run: DemoRun) -> None:
    mails = read_maildir(run.maildir)
    say("6/6 what arrived:")
    failures: list[str] = []
    editions: Counter[str] = Counter()
    for reader in READERS:
        own = [mail for mail in mails if reader.address in mail.recipient]
        kinds = Counter(kind_of(mail) for mail in own)
        summary = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
        chosen = "+".join(reader.editions)
        say(f"   [{chosen}] 1 subscriber ({reader.address}): {len(own)} mails ({summary})")
        issue_languages = sorted(mail.language for mail in own if kind_of(mail) == "issue")
        if issue_languages != sorted(reader.editions):
            failures.append(f"{reader.address}: issue editions {issue_languages}, not {chosen}")
        for mail in own:
            label = f"{kind_of(mail):12} {mail.language or '?':2}"
            say(f"        {label}  {mail.subject!r:60.60}  {mail.path}")
            # A confirmation is in the page's language, an issue in its edition's.
            expected = reader.page if kind_of(mail) != "issue" else mail.language
            failures += [f"{mail.path}: {problem}" for problem in problems_of(mail, expected)]
            if kind_of(mail) == "issue":
                editions[mail.language] += 1
    say(
        "   issue mails per edition: "
        + ", ".join(f"{lang} {editions[lang]}" for lang in ("en", "be", "ru"))
    )
    say(f"   {len(mails)} mails in {run.maildir}/ (Maildir: new/ holds one file per mail)")
    if failures:
        raise DemoFailed("mails failed their checks:\n" + "\n".join(failures))
    say("every mail parses without defects and has text and HTML parts in its reader's language")


async def _wait_for_mail(run: DemoRun, *, want: dict[str, int]) -> dict[str, list[StoredMail]]:
    deadline = time.monotonic() + run.timeout_s
    while True:
        found: dict[str, list[StoredMail]] = {address: [] for address in want}
        for mail in read_maildir(run.maildir):
            for address in want:
                if address in mail.recipient:
                    found[address].append(mail)
        if all(len(found[a]) >= n for a, n in want.items()):
            return found
        if time.monotonic() > deadline:
            missing = [a for a, n in want.items() if len(found[a]) < n]
            raise DemoFailed(f"no mail arrived for {missing} within {run.timeout_s}s")
        await asyncio.sleep(0.2)


def _signup_form(html: str, *, base_url: str) -> Form:
    for form in post_forms(html, base_url=base_url):
        if "email" in form.input_types.values() or "email" in form.input_types:
            return form
    raise DemoFailed("the signup page has no form with an email field")


def _only_post_form(html: str, *, base_url: str, what: str) -> Form:
    forms = [f for f in post_forms(html, base_url=base_url) if what in f.action]
    if not forms:
        raise DemoFailed(f"the {what} page has no POST form to {what}")
    return forms[0]


def _multi(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Form pairs as httpx wants repeated fields (several languages ticked)."""
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name, []).append(value)
    return grouped


def _expect(response: httpx.Response, what: str) -> None:
    if response.status_code >= 400:
        raise DemoFailed(f"{what}: HTTP {response.status_code}: {response.text[:300]}")


def _os_environ() -> dict[str, str]:
    return dict(os.environ)
