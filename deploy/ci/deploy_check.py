"""`make deploy-check`: the image and the compose stack, built and run for real on this machine.

Builds the images (deploy/ci/ci_images.py), starts deploy/compose.yaml with
deploy/ci/compose.ci.yaml on top in stages (deploy/ci/ci_stack.py), waits for health, then walks
readers through the containers as a person would: the signup form (GET, then POST with its
CSRF token after the time trap), the confirmation mail (read from the sink's Maildir, a host
folder), the confirmation, the sample issue sent with ``newsletter issue send`` inside the
renderer container and received in English, Belarusian and Russian, and ``/readyz`` of every
service. The stack is torn down at the end, also when a step fails (``--keep`` leaves it up).

Run:  .venv/bin/python deploy/ci/deploy_check.py   (what `make deploy-check` does)
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from ci_images import (
    REPO_ROOT,
    BuildFailed,
    build_project_image,
    build_support_images,
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
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per wait")
    args = parser.parse_args(argv)
    steps = Steps()
    WORK.mkdir(parents=True, exist_ok=True)
    try:
        build(steps)
    except BuildFailed as err:
        say(f"deploy-check failed: {err}")
        return 1
    maildir = WORK / "mail"
    shutil.rmtree(maildir, ignore_errors=True)
    for folder in (maildir, *(maildir / sub for sub in ("tmp", "new", "cur"))):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o777)  # the sink runs as the image's user 10001
    stack = Stack(work=WORK, maildir=maildir, issue=SAMPLE_ISSUE)
    stack.write_env_file()
    ok = False
    try:
        stack.down()  # containers left by an interrupted run
        start(stack, steps, timeout=args.timeout)
        walk(stack, steps, timeout=args.timeout)
        ok = True
    except (StackFailed, CheckFailed, httpx.HTTPError) as err:
        say(f"deploy-check failed: {err}")
        for service in ("rabbitmq", "postgres", "mailpit", *SUITE):
            say(f"--- last log lines of {service} ---\n{stack.logs(service, lines=15)}")
    finally:
        if args.keep:
            say(f"stack left running (--keep); env file {WORK / 'compose.env'}")
        else:
            with steps.step("tear the stack down (podman-compose down -v)"):
                stack.down()
    total = time.monotonic() - steps.started
    say(f"deploy-check {'passed' if ok else 'FAILED'} in {total:.0f}s")
    return 0 if ok else 1


def build(steps: Steps) -> None:
    with steps.step("base image from Debian (debootstrap + podman import, kept once built)"):
        ensure_base_image(work=WORK, say=say)
    with steps.step("wheelhouse on the host (pip in a container cannot verify the index)"):
        wheelhouse = ensure_wheelhouse(work=WORK, say=say)
    with steps.step("Python, RabbitMQ and PostgreSQL images from Debian packages"):
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
        check_issue(received)
    with steps.step("/readyz of every service, health of RabbitMQ and PostgreSQL"):
        for service in PROBE_PORTS:
            status, body = stack.probe(service)
            say(f"   {service:12} /readyz {status} {body[:70]}")
            if status != 200:
                raise CheckFailed(f"{service} /readyz answered {status}: {body}")
        for service in ("rabbitmq", "postgres"):
            stack.wait_healthy(service, timeout=30)
            say(f"   {service:12} healthy")
        answer = httpx.get(f"{stack.public_url}/readyz", timeout=10)
        say(f"   subscription /readyz from the host: {answer.status_code}")
        if answer.status_code != 200:
            raise CheckFailed(f"subscription /readyz from the host: {answer.status_code}")


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
        page = client.get(links[0])
        expect(page, f"confirmation page ({lang})")
        forms = [f for f in post_forms(page.text, base_url=str(page.url)) if "confirm" in f.action]
        if not forms:
            raise CheckFailed(f"the {lang} confirmation page has no POST form")
        answer = client.post(forms[0].action, data=grouped(forms[0].filled({})))
        expect(answer, f"confirmation of the {lang} reader")
        say(f"   [{lang}] {mails[0].subject!r:50.50} -> confirmed (HTTP {answer.status_code})")


def check_issue(mails: list[StoredMail]) -> None:
    failures: list[str] = []
    for lang, address in READERS:
        own = [m for m in mails if address in m.recipient]
        if len(own) != 1:
            failures.append(f"{address}: {len(own)} issue mails, expected 1")
            continue
        mail = own[0]
        say(f"   [{lang}] {mail.language or '?':2} {mail.subject!r:60.60}")
        if mail.language != lang:
            failures.append(f"{address}: edition in {mail.language!r}, expected {lang!r}")
        failures += [f"{mail.path}: {problem}" for problem in problems_of(mail, lang)]
        if not str(mail.message["List-Unsubscribe"] or ""):
            failures.append(f"{address}: no List-Unsubscribe header")
    if failures:
        raise CheckFailed("issue mails failed their checks:\n" + "\n".join(failures))


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
