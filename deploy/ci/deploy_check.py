"""`make deploy-check`: the image and the compose stack, built and run for real on this machine.

Builds the images (deploy/ci/ci_images.py), starts deploy/compose.yaml with
deploy/ci/compose.ci.yaml on top in stages (deploy/ci/ci_stack.py), waits for health, then walks
readers through the nginx proxy, the one public origin, as a person would: the signup form
(GET, then POST with its CSRF token after the time trap), the confirmation mail (read from the
sink's Maildir, a host folder), the confirmation, the sample issue sent with ``newsletter issue
send`` inside the renderer container and received in English, Belarusian and Russian, the
mails' own links (issue page, preferences, one-click unsubscribe) on that origin, the archive of
each language, and ``/readyz`` of every service from inside its container.

The stack is torn down at the end, also when a step fails, on Ctrl-C, on SIGTERM (``timeout``)
and when the run goes over ``--budget`` seconds (``--keep`` leaves it up). One check runs at a
time on a machine: a lock in the cache folder is held for the whole run, and ``--down`` (what
``.ci/run``'s trap calls) removes only this project's containers, network and volumes, never
anything else, and only when no other check holds the lock.

Run:  .venv/bin/python deploy/ci/deploy_check.py   (what `make deploy-check` does)
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import IO
from urllib.parse import urlsplit

import httpx
from ci_images import (
    REPO_ROOT,
    BuildFailed,
    build_project_image,
    build_support_images,
    cache_dir,
    ensure_base_image,
    ensure_wheelhouse,
)
from ci_stack import PROBE_PORTS, Stack, StackFailed, wait_smtp_banner

from newsletter_cli.forms import Form, post_forms
from newsletter_cli.mail_checks import kind_of, problems_of
from newsletter_cli.mailbox_reader import StoredMail, read_maildir

WORK = REPO_ROOT / "var" / "deploy-check"
SAMPLE_ISSUE = REPO_ROOT / "deploy" / "sample-issue"
READERS: tuple[tuple[str, str], ...] = (
    ("en", "reader.en@example.org"),
    ("be", "chytach.be@example.org"),
    ("ru", "chitatel.ru@example.org"),
)
TIME_TRAP_WAIT_S = 3.5  # the form refuses a POST sooner than NEWSLETTER_SIGNUP_MIN_SECONDS (3)
SUITE = ("subscription", "renderer", "dispatcher", "bounces")
SAMPLE_NUMBER = 50  # deploy/sample-issue: "issue: 50"
# A cold run (every image built) took 17 min under a load average of 18 here, a warm one 4.
DEFAULT_BUDGET_S = 2400.0


class Interrupted(BaseException):  # like KeyboardInterrupt: `except Exception` lets it by
    """SIGTERM, SIGHUP or the run's time budget: stop, but tear the stack down first."""


class CheckFailed(RuntimeError):
    """A step of the walk did not do what it should; the message says which."""


class Steps:
    """Numbered steps with their time, and the total since the start."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.count = 0

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        self.count += 1
        began = time.monotonic()
        say(f"[{began - self.started:6.1f}s] {self.count}. {title}")
        yield
        say(f"         ok in {time.monotonic() - began:.1f}s")


def say(text: str) -> None:
    print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="leave the stack running at the end")
    parser.add_argument("--down", action="store_true", help="only remove a stack left running")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per wait")
    parser.add_argument(
        "--budget", type=float, default=DEFAULT_BUDGET_S, help="seconds for the whole run"
    )
    parser.add_argument(
        "--lock-wait", type=float, default=600.0, help="seconds to wait for another check"
    )
    args = parser.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    stack = Stack(work=WORK, maildir=WORK / "mail", issue=SAMPLE_ISSUE)
    if args.down:
        return tear_down_leftovers(stack)
    install_stop_signals(budget=args.budget)  # the wait for another check counts too
    try:
        lock = acquire_lock(wait=args.lock_wait)
    except Interrupted as stop:
        say(f"deploy-check STOPPED while waiting for another check: {stop}")
        return 1
    if lock is None:
        return 1
    with lock:
        return run_check(stack, args)


def run_check(stack: Stack, args: argparse.Namespace) -> int:
    steps = Steps()
    try:
        build(steps)
    except BuildFailed as err:
        say(f"deploy-check FAILED while building images: {err}")
        return 1
    except (Interrupted, KeyboardInterrupt) as stop:
        say(f"deploy-check STOPPED while building images: {stop or 'Ctrl-C'}")
        return 1
    shutil.rmtree(stack.maildir, ignore_errors=True)
    for folder in (stack.maildir, *(stack.maildir / sub for sub in ("tmp", "new", "cur"))):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o777)  # the sink runs as the image's user 10001
    ok = False
    try:
        stack.write_env_file()
        stack.down()  # containers left by an interrupted run
        say(f"   host ports: {' '.join(f'{k}={v}' for k, v in stack.ports.items())}")
        start(stack, steps, timeout=args.timeout)
        walk(stack, steps, timeout=args.timeout)
        ok = True
    except (StackFailed, CheckFailed, httpx.HTTPError) as err:
        say(f"deploy-check FAILED at step {steps.count}: {err}")
        for service in ("rabbitmq", "postgres", "mailpit", *SUITE, "proxy"):
            say(f"--- last log lines of {service} ---\n{stack.logs(service, lines=15)}")
    except (Interrupted, KeyboardInterrupt) as stop:
        say(f"deploy-check STOPPED at step {steps.count}: {stop or 'Ctrl-C'}")
    finally:
        signal.alarm(0)
        if args.keep:
            say(f"stack left running (--keep); env file {WORK / 'compose.env'}")
        else:
            # A second Ctrl-C or TERM (make passes one on) must not leave half a stack: the
            # teardown runs to its end (`.ci/run`'s timeout kills it 120 s later if it hangs).
            stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
            previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in stops}
            try:
                with steps.step("tear the stack down (podman-compose down -v)"):
                    stack.down()
            finally:
                for signum, handler in previous.items():
                    signal.signal(signum, handler)
    total = time.monotonic() - steps.started
    say(f"deploy-check {'passed' if ok else 'FAILED'} in {total:.0f}s")
    return 0 if ok else 1


def acquire_lock(*, wait: float) -> IO[str] | None:
    """The machine-wide lock of deploy-check runs (flock: freed when its holder dies)."""
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    handle = (folder / "deploy-check.lock").open("a+", encoding="utf-8")
    deadline = time.monotonic() + wait
    told = False
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() > deadline:
                say(f"deploy-check FAILED: {handle.name} still held after {wait:.0f}s")
                handle.close()
                return None
            if not told:
                handle.seek(0)
                holder = handle.read().strip()
                say(f"another deploy-check runs ({holder}); waiting up to {wait:.0f}s")
                told = True
            time.sleep(2.0)
            continue
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} in {REPO_ROOT}\n")
        handle.flush()
        return handle


def tear_down_leftovers(stack: Stack) -> int:
    """``--down``: remove this project's containers, network and volumes if no check is running."""
    lock = acquire_lock(wait=0)
    if lock is None:
        say("deploy-check --down: left alone, another check is running")
        return 0
    with lock:
        if not (WORK / "compose.env").exists():
            stack.write_env_file()  # podman-compose needs the variables to read the files
        stack.down()
        left = stack.containers()
        say(f"deploy-check --down: {'containers left: ' + ', '.join(left) if left else 'clean'}")
        return 1 if left else 0


def install_stop_signals(*, budget: float) -> None:
    def stop(signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGALRM:
            raise Interrupted(f"over the time budget of {budget:.0f}s (--budget)")
        raise Interrupted(f"{signal.Signals(signum).name} received")

    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
        signal.signal(signum, stop)
    signal.alarm(max(1, int(budget)))


def build(steps: Steps) -> None:
    with steps.step("base image from Debian (debootstrap + podman import, kept once built)"):
        ensure_base_image(work=WORK, say=say)
    with steps.step("wheelhouse on the host (pip in a container cannot verify the index)"):
        wheelhouse = ensure_wheelhouse(say=say)
    with steps.step("Python, RabbitMQ, PostgreSQL and nginx images from Debian packages"):
        build_support_images(say=say)
    with steps.step("project image from deploy/Dockerfile"):
        build_project_image(wheelhouse=wheelhouse, say=say)


def start(stack: Stack, steps: Steps, *, timeout: float) -> None:
    with steps.step("start RabbitMQ, PostgreSQL and the SMTP sink; wait for their health"):
        stack.up("rabbitmq", "postgres", "mailpit")
        for service in ("postgres", "rabbitmq"):
            waited = stack.wait_healthy(service, timeout=timeout)
            say(f"   {service} healthy after {waited:.1f}s (its compose health test)")
        waited = wait_smtp_banner(stack.ports["MAILPIT_SMTP_PORT"], timeout=timeout)
        say(f"   SMTP sink greets after {waited:.1f}s")
    with steps.step("one-shot steps: RabbitMQ definitions import, database migrations"):
        stack.up("rabbitmq-definitions", "migrate")
        for service in ("rabbitmq-definitions", "migrate"):
            stack.wait_exit_zero(service, timeout=timeout)
            say(f"   {service} exited 0")
    with steps.step("start subscription, renderer, dispatcher, bounces; wait for /readyz"):
        stack.up(*SUITE)
        for service in SUITE:
            waited = stack.wait_ready(service, timeout=timeout)
            say(f"   {service} ready after {waited:.1f}s")
    with steps.step(f"start the nginx proxy; wait for the signup page at {stack.public_url}/"):
        stack.up("proxy")
        waited = stack.wait_public_page("/", timeout=timeout)
        say(f"   the proxy answers 200 after {waited:.1f}s")


def walk(stack: Stack, steps: Steps, *, timeout: float) -> None:
    with httpx.Client(base_url=stack.public_url, timeout=15.0) as client:
        with steps.step(f"signup form at {stack.public_url}: GET, wait out the time trap, POST"):
            sign_up(client)
        with steps.step("confirmation mails in the sink's Maildir; confirm through their links"):
            confirm(client, maildir=stack.maildir, timeout=timeout)
    with steps.step("`newsletter issue send` of the sample issue inside the renderer container"):
        before = len(issue_mails(stack.maildir))
        done = stack.exec(
            "renderer",
            "newsletter",
            "issue",
            "send",
            "/etc/newsletter/sample-issue",
            "--no-spam",
            "--wait",
            "--timeout",
            str(int(timeout)),
            timeout=timeout + 60,
        )
        for line in done.stdout.splitlines():
            say("   " + line)
        if done.returncode != 0:
            raise CheckFailed(f"issue send exited {done.returncode}: {done.stderr[-2000:]}")
    with steps.step("the issue received by each reader in their language"):
        received = wait_for(
            lambda: issue_mails(stack.maildir), want=before + len(READERS), timeout=timeout
        )
        mails = check_issue(received)
    with httpx.Client(base_url=stack.public_url, timeout=15.0) as client:
        with steps.step("the issue mails' links on the public origin: issue page, preferences"):
            follow_mail_links(client, mails, public_url=stack.public_url)
        with steps.step("the archive of each language and its issue page, through the proxy"):
            check_archive(client, public_url=stack.public_url)
        with steps.step("one-click unsubscribe (RFC 8058 POST) through the proxy"):
            unsubscribe_one_click(client, mails[READERS[-1][0]])
    with steps.step("/readyz of every service, health of RabbitMQ and PostgreSQL"):
        for service in PROBE_PORTS:
            status, body = stack.probe(service)
            say(f"   {service:12} /readyz {status} {body[:70]}")
            if status != 200:
                raise CheckFailed(f"{service} /readyz answered {status}: {body}")
        for service in ("rabbitmq", "postgres"):
            stack.wait_healthy(service, timeout=30)
            say(f"   {service:12} healthy")
        for path in ("/readyz", "/metrics", "/editor"):
            answer = httpx.get(f"{stack.public_url}{path}", timeout=10)
            say(f"   {path} on the public origin: {answer.status_code} (internal only)")
            if answer.status_code != 404:
                raise CheckFailed(f"{path} answered {answer.status_code} through the proxy")


def follow_mail_links(
    client: httpx.Client, mails: dict[str, StoredMail], *, public_url: str
) -> None:
    """Every link of the suite's own in a mail is on the public origin and opens there."""
    origin = urlsplit(public_url)
    for lang, mail in mails.items():
        own = own_links(mail, public_url=public_url)
        web = [u for u in own if "/issues/" in u or "/archive/" in u]
        preferences = [u for u in own if "/preferences" in u]
        if not web or not preferences:
            raise CheckFailed(f"the {lang} issue mail lacks its web view or preferences: {own}")
        ends: list[str] = []
        for url in (web[0], preferences[0]):
            page = client.get(url, follow_redirects=True)
            expect(page, f"{url} ({lang}) from the issue mail")
            hops = " -> ".join(urlsplit(str(r.url)).path[:24] for r in page.history)
            final = urlsplit(str(page.url))
            if f"{final.scheme}://{final.netloc}" != public_url:
                raise CheckFailed(f"{url} led off the public origin to {page.url}")
            say(f"   [{lang}] {hops + ' -> ' if hops else ''}{final.path[:40]} {page.status_code}")
            ends.append(final.path)
        if ends[0] != f"/{lang}/issues/{SAMPLE_NUMBER}":
            raise CheckFailed(f"the {lang} web view {web[0]} ends at {ends[0]}, not the issue")
        for url in (*_URL_IN_TEXT.findall(mail.text()), *unsubscribe_urls(mail)):
            parts = urlsplit(url)
            if parts.hostname in {"127.0.0.1", "localhost"} and parts.port != origin.port:
                raise CheckFailed(f"the {lang} issue mail links an internal port: {url}")


def check_archive(client: httpx.Client, *, public_url: str) -> None:
    for lang, _ in READERS:
        index = client.get(f"/{lang}/")
        expect(index, f"archive /{lang}/")
        issue_path = f"/{lang}/issues/{SAMPLE_NUMBER}"
        if issue_path not in index.text:
            raise CheckFailed(f"/{lang}/ does not list issue {SAMPLE_NUMBER} ({issue_path})")
        page = client.get(issue_path)
        expect(page, f"issue page {issue_path}")
        canonical = f'<link rel="canonical" href="{public_url}{issue_path}">'
        if canonical not in page.text:
            raise CheckFailed(f"{issue_path} lacks its canonical URL on the public origin")
        others = [o for o, _ in READERS if o != lang]
        missing = [o for o in others if f"/{o}/issues/{SAMPLE_NUMBER}" not in page.text]
        if missing:
            raise CheckFailed(f"{issue_path} does not link the same issue in {missing}")
        say(f"   /{lang}/ {index.status_code}, {issue_path} {page.status_code}")
    sitemap = client.get("/sitemap.xml")
    expect(sitemap, "/sitemap.xml")
    say(f"   /sitemap.xml {sitemap.status_code}")


def unsubscribe_one_click(client: httpx.Client, mail: StoredMail) -> None:
    urls = [u for u in unsubscribe_urls(mail) if u.startswith("http")]
    if not urls:
        raise CheckFailed(f"no http List-Unsubscribe URL in the mail to {mail.recipient}")
    answer = client.post(urls[0], data={"List-Unsubscribe": "One-Click"})
    expect(answer, f"one-click unsubscribe of {mail.recipient}")
    say(f"   {mail.recipient}: POST {urlsplit(urls[0]).path} -> {answer.status_code}")


_URL_IN_TEXT = re.compile(r"https?://[^\s<>\"')\]]+")


def unsubscribe_urls(mail: StoredMail) -> list[str]:
    header = str(mail.message["List-Unsubscribe"] or "")
    return re.findall(r"<([^>]+)>", header)


def own_links(mail: StoredMail, *, public_url: str) -> list[str]:
    return [u for u in _URL_IN_TEXT.findall(mail.text()) if u.startswith(public_url + "/")]


def sign_up(client: httpx.Client) -> None:
    forms: dict[str, Form] = {}
    for lang, _ in READERS:
        page = client.get("/", params={"lang": lang})
        expect(page, f"signup form ({lang})")
        forms[lang] = signup_form(page)
    time.sleep(TIME_TRAP_WAIT_S)  # a person's typing time, not synchronisation
    for lang, address in READERS:
        form = forms[lang]
        hidden = [name for name, kind in form.input_types.items() if kind == "hidden"]
        if not any("csrf" in name.lower() for name in hidden):
            raise CheckFailed(f"the {lang} signup form carries no CSRF token: {hidden}")
        email_field = next((n for n, kind in form.input_types.items() if kind == "email"), "email")
        language_field = next((n for n, value in form.checkboxes if value == lang), "languages")
        pairs = form.filled({email_field: address}, check={language_field: {lang}})
        answer = client.post(form.action, data=grouped(pairs))
        expect(answer, f"signup of the {lang} reader")
        say(f"   [{lang}] {address}: HTTP {answer.status_code}")


def confirm(client: httpx.Client, *, maildir: Path, timeout: float) -> None:
    for lang, address in READERS:
        mails = wait_for(
            lambda a=address: [m for m in read_maildir(maildir) if a in m.recipient],  # type: ignore[misc]
            want=1,
            timeout=timeout,
        )
        links = mails[0].links("/confirm?token=")
        if not links:
            raise CheckFailed(f"no confirmation link in the mail to {address}")
        if not links[0].startswith(str(client.base_url).rstrip("/") + "/"):
            raise CheckFailed(f"the confirmation link is not on the public origin: {links[0]}")
        page = client.get(links[0])
        expect(page, f"confirmation page ({lang})")
        forms = [f for f in post_forms(page.text, base_url=str(page.url)) if "confirm" in f.action]
        if not forms:
            raise CheckFailed(f"the {lang} confirmation page has no POST form")
        answer = client.post(forms[0].action, data=grouped(forms[0].filled({})))
        expect(answer, f"confirmation of the {lang} reader")
        say(f"   [{lang}] {mails[0].subject!r:50.50} -> confirmed (HTTP {answer.status_code})")


def check_issue(mails: list[StoredMail]) -> dict[str, StoredMail]:
    """Each reader's one issue mail, by language, after the mail checks of `newsletter demo`."""
    failures: list[str] = []
    found: dict[str, StoredMail] = {}
    for lang, address in READERS:
        own = [m for m in mails if address in m.recipient]
        if len(own) != 1:
            failures.append(f"{address}: {len(own)} issue mails, expected 1")
            continue
        mail = own[0]
        found[lang] = mail
        say(f"   [{lang}] {mail.language or '?':2} {mail.subject!r:60.60}")
        if mail.language != lang:
            failures.append(f"{address}: edition in {mail.language!r}, expected {lang!r}")
        failures += [f"{mail.path}: {problem}" for problem in problems_of(mail, lang)]
        if not str(mail.message["List-Unsubscribe"] or ""):
            failures.append(f"{address}: no List-Unsubscribe header")
    if failures:
        raise CheckFailed("issue mails failed their checks:\n" + "\n".join(failures))
    return found


def issue_mails(maildir: Path) -> list[StoredMail]:
    return [m for m in read_maildir(maildir) if kind_of(m) == "issue"]


def wait_for(
    read: Callable[[], list[StoredMail]], *, want: int, timeout: float
) -> list[StoredMail]:
    """Poll the Maildir until ``read`` finds ``want`` mails (a deadline, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        found = read()
        if len(found) >= want:
            return found
        if time.monotonic() > deadline:
            raise CheckFailed(f"{len(found)} of {want} mails arrived within {timeout:.0f}s")
        time.sleep(0.3)


def signup_form(page: httpx.Response) -> Form:
    for form in post_forms(page.text, base_url=str(page.url)):
        if "email" in form.input_types.values() or "email" in form.input_types:
            return form
    raise CheckFailed("the signup page has no form with an email field")


def grouped(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for name, value in pairs:
        result.setdefault(name, []).append(value)
    return result


def expect(response: httpx.Response, what: str) -> None:
    if response.status_code >= 400:
        raise CheckFailed(f"{what}: HTTP {response.status_code}: {response.text[:300]}")


if __name__ == "__main__":
    sys.exit(main())
