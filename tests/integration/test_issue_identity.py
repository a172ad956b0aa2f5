"""An issue goes out once, in every edition each reader chose, and its progress reads plainly.

The real parts: ``newsletter issue send`` and ``newsletter send status`` as processes, the
renderer and the dispatcher running on a vhost of their own, an SMTP server over a socket
(every accepted message counted), SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import bindparam, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from shared.db.tables import IssueSend
from shared.settings import Settings, load_settings
from tests.integration.renderer_harness import running_renderer
from tests.support import dispatch_seed
from tests.support.database import sessions_on
from tests.support.test_mta import MtaScript, ScriptedMta

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "deploy" / "sample-issue"
SECRET = "identity-test-secret-" + "k" * 32


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    async with sessions_on(database_url) as factory:
        yield factory


def issue_folder(tmp_path: Path, *, drop: Sequence[str] = ()) -> tuple[Path, int]:
    """The sample issue under a number of its own (the PostgreSQL database is shared)."""
    number = random.randint(100_000, 999_999_999)
    folder = tmp_path / f"issue-{number}"
    shutil.copytree(SAMPLE, folder)
    for source in folder.glob("*.md"):
        if source.stem in drop:
            source.unlink()
            continue
        source.write_text(
            source.read_text(encoding="utf-8").replace("issue: 50\n", f"issue: {number}\n"),
            encoding="utf-8",
        )
    return folder, number


@dataclass
class Services:
    """A renderer and a dispatcher on this test's vhost, the MTA, and the CLI's environment."""

    mta: ScriptedMta
    env: dict[str, str]
    archive_url: str

    def mails(self) -> int:
        return len(self.mta.handler.accepted)

    def languages_of(self, address: str) -> list[str]:
        return sorted(
            str(a.parsed()["Content-Language"])
            for a in list(self.mta.handler.accepted)
            if a.rcpt == address
        )

    async def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """``newsletter ARGS`` as its own process (off the loop the services run on)."""
        return await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "newsletter_cli.main", *args],
            env=self.env,
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    async def issue_send(self, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return await self.cli(
            "issue", "send", str(folder), "--no-spam", "--wait", "--timeout", "60", *args
        )


@pytest.fixture
async def services(vhost_url: str, database_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    settings = load_settings(
        mode="test",
        amqp_url=vhost_url,
        database_url=database_url,
        var_dir=tmp_path,
        secret_key=SECRET,
        admin_token="identity-admin-token",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env.update(
        NEWSLETTER_MODE="test",
        NEWSLETTER_AMQP_URL=vhost_url,
        NEWSLETTER_DATABASE_URL=database_url,
        NEWSLETTER_SECRET_KEY=SECRET,
        NEWSLETTER_ADMIN_TOKEN="identity-admin-token",
        NEWSLETTER_VAR_DIR=str(tmp_path),
    )
    with ScriptedMta() as mta:
        dispatcher = dispatch_seed.make_settings(
            amqp_url=vhost_url,
            database_url=database_url,
            smtp_url=mta.url,
            tmp_path=tmp_path,
            secret_key=SECRET,
        )
        async with (
            running_renderer(settings, tmp_path) as renderer,
            dispatch_seed.RunningDispatcher(dispatcher),
        ):
            yield Services(mta=mta, env=env, archive_url=renderer.base_url)


async def reader(
    sessions: async_sessionmaker[AsyncSession], languages: Sequence[str], label: str = "reader"
) -> str:
    """One active subscriber of ``languages``; returns the address."""
    from shared.addresses import address_domain, address_hash
    from shared.db.tables import Subscriber, SubscriberLanguage

    address = f"{label}.{uuid.uuid4().hex[:10]}@example.org"
    async with sessions() as session:
        subscriber = Subscriber(
            email=address,
            email_hash=address_hash(address),
            email_domain=address_domain(address),
            status="active",
            locale=languages[0],
        )
        session.add(subscriber)
        await session.flush()
        assert subscriber.id is not None
        for language in languages:
            session.add(SubscriberLanguage(subscriber_id=subscriber.id, language=language))
        await session.commit()
    return address


async def audience(sessions: async_sessionmaker[AsyncSession]) -> int:
    """Mails a send to every segment makes: one per active, unsuppressed (reader, edition)
    whose cadence takes this issue (the planner's rule, :mod:`tests.support.dispatch_seed`)."""
    copies = await dispatch_seed.expected_copies(sessions, ["en", "be", "ru"])
    return sum(copies.values())


async def sends_of(sessions: async_sessionmaker[AsyncSession], number: int) -> list[str]:
    async with sessions() as session:
        rows = await session.execute(
            text("SELECT id FROM send WHERE issue_key = :key ORDER BY created_at"),
            {"key": f"issue-{number}"},
        )
        return [str(r[0]) for r in rows]


def send_id_of(done: subprocess.CompletedProcess[str]) -> str:
    match = re.search(r"^send ([0-9a-f-]{36}) requested", done.stdout, re.MULTILINE)
    assert match, f"no send id in:\n{done.stdout}\n{done.stderr}"
    return match.group(1)


async def wait_until(condition: Callable[[], object], *, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():  # type: ignore[misc]
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout}s")
        await asyncio.sleep(0.1)


async def test_a_second_send_of_an_issue_is_refused_and_mails_no_one_again(
    services: Services, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    await reader(sessions, ["en"])
    await reader(sessions, ["be", "ru"])
    folder, number = issue_folder(tmp_path)
    expected = await audience(sessions)

    first = await services.issue_send(folder)
    assert first.returncode == 0, first.stdout + first.stderr
    first_id = send_id_of(first)
    assert services.mails() == expected

    again = await services.issue_send(folder)
    assert again.returncode == 2, f"a second send must be refused:\n{again.stdout}"
    assert f"issue {number} (2021-12-13 .. 2021-12-19) already has 1 send(s)" in again.stderr
    assert f"send {first_id} (first)" in again.stderr
    assert "status done" in again.stderr
    assert f"{expected} deliveries ({expected} sent)" in again.stderr
    assert "--only-new" in again.stderr
    assert "--resend-all" in again.stderr
    assert services.mails() == expected, "the refused send mailed someone"
    assert await sends_of(sessions, number) == [first_id]


async def test_only_new_mails_readers_without_the_issue_and_resend_all_needs_the_number(
    services: Services, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    await reader(sessions, ["en"])
    folder, number = issue_folder(tmp_path)
    refused = await services.issue_send(folder, "--only-new")
    assert refused.returncode == 2
    assert f"issue {number} (2021-12-13 .. 2021-12-19) has not been sent yet" in refused.stderr

    first = await services.issue_send(folder)
    assert first.returncode == 0, first.stdout + first.stderr
    everyone = services.mails()
    newcomer = await reader(sessions, ["en", "ru"], label="newcomer")

    only_new = await services.issue_send(folder, "--only-new")
    assert only_new.returncode == 0, only_new.stdout + only_new.stderr
    assert "(only-new)" in only_new.stdout
    assert services.mails() == everyone + 2, "only the newcomer, in both editions"
    assert services.languages_of(newcomer) == ["en", "ru"]

    unconfirmed = await services.issue_send(folder, "--resend-all")
    assert unconfirmed.returncode == 2
    assert f"{number} expected, nothing given" in unconfirmed.stderr
    wrong = await services.issue_send(folder, "--yes-resend", str(number + 1))
    assert wrong.returncode == 2
    assert f"{number} expected, {number + 1} given" in wrong.stderr
    assert services.mails() == everyone + 2

    resent = await services.issue_send(folder, "--yes-resend", str(number))
    assert resent.returncode == 0, resent.stdout + resent.stderr
    assert services.mails() == 2 * (everyone + 2)
    ids = await sends_of(sessions, number)
    assert len(ids) == 3

    import httpx

    async with httpx.AsyncClient(base_url=services.archive_url, timeout=15) as client:
        page = (await client.get("/en/")).text
        feed = (await client.get("/en/feed.atom")).text
        views = [await client.get(f"/archive/en/{send_id}") for send_id in ids]
    assert page.count(f'/en/issues/{number}"') == 1, "one entry per issue"
    assert feed.count(f"/en/issues/{number}</id>") == 1, "one feed entry per issue"
    assert {(v.status_code, v.headers["location"].rsplit("/", 1)[-1]) for v in views} == {
        (301, str(number))
    }, "every send's view-in-browser link leads to the issue's one page"


async def test_two_first_sends_at_once_leave_one_send_and_one_mail_per_edition(
    services: Services, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    await reader(sessions, ["ru"])
    folder, number = issue_folder(tmp_path)
    expected = await audience(sessions)
    results = await asyncio.gather(services.issue_send(folder), services.issue_send(folder))
    codes = sorted(r.returncode for r in results)
    assert codes == [0, 2], [r.stdout + r.stderr for r in results]
    refused = next(r for r in results if r.returncode == 2)
    assert "already has 1 send(s)" in refused.stderr
    assert len(await sends_of(sessions, number)) == 1
    assert services.mails() == expected


async def test_the_database_allows_one_first_send_per_issue(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    key = f"issue-{uuid.uuid4().hex[:12]}"

    def request(intent: str) -> IssueSend:
        return IssueSend(
            send_id=str(uuid.uuid4()),
            issue_key=key,
            issue_number=1,
            date_from=date(2021, 12, 13),
            date_to=date(2021, 12, 19),
            intent=intent,
            segments="en",
        )

    async with sessions() as session:
        session.add_all([request("first"), request("only_new"), request("test")])
        await session.commit()
    async with sessions() as session:
        session.add(request("first"))
        with pytest.raises(IntegrityError):
            await session.commit()


async def test_a_reader_of_two_editions_gets_both_and_a_fallback_reader_one(
    services: Services, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    both = await reader(sessions, ["en", "ru"], label="both")
    fallback_and_own = await reader(sessions, ["be", "ru"], label="be-ru")
    be_only = await reader(sessions, ["be"], label="be")
    folder, _ = issue_folder(tmp_path, drop=["be"])
    done = await services.issue_send(folder, "--fallback", "be=ru")
    assert done.returncode == 0, done.stdout + done.stderr
    assert services.languages_of(both) == ["en", "ru"], "one mail per chosen edition"
    assert services.languages_of(fallback_and_own) == ["ru"], "the ru text once, not twice"
    assert services.languages_of(be_only) == ["ru"]
    assert re.search(r"^  en: \d+ deliveries", done.stdout, re.MULTILINE), done.stdout


async def test_send_status_shows_each_edition_with_its_reasons_and_marks_test_sends(
    services: Services, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    busy = [await reader(sessions, ["en"], label="busy") for _ in range(2)]
    refused = await reader(sessions, ["ru"], label="refused")
    await reader(sessions, ["ru"], label="fine")
    services.mta.handler.script = MtaScript(defer=set(busy), policy_reject={refused})
    folder, number = issue_folder(tmp_path)

    # Requested, not planned yet: "planning…", never "total=0".
    early_id = str(uuid.uuid4())
    async with sessions() as session:
        row = IssueSend(
            send_id=early_id,
            issue_key=f"issue-{number}-early",
            issue_number=number,
            date_from=date(2021, 12, 13),
            date_to=date(2021, 12, 19),
            intent="first",
            segments="en,ru",
        )
        session.add(row)
        await session.commit()
    early = await services.cli("send", "status", early_id)
    assert early.returncode == 0, early.stdout + early.stderr
    assert "planning…" in early.stdout
    assert "total=0" not in early.stdout

    started = await services.cli("issue", "send", str(folder), "--no-spam")
    assert started.returncode == 0, started.stdout + started.stderr
    send_id = send_id_of(started)

    async def settled() -> bool:
        async with sessions() as session:
            rows = await session.execute(
                text(
                    "SELECT d.smtp_code, COUNT(*) FROM delivery d JOIN subscriber s "
                    "ON s.id = d.subscriber_id WHERE d.send_id = :s AND s.email IN :a "
                    "GROUP BY d.smtp_code"
                ).bindparams(bindparam("a", expanding=True)),
                {"s": send_id, "a": [*busy, refused]},
            )
            found = {r[0]: int(r[1]) for r in rows}
        # Both busy readers were deferred at least once (a retry may be under way), and the
        # refused one failed.
        return found.get(451, 0) == 2 and found.get(554, 0) == 1

    await wait_until(settled)
    status = await services.cli("send", "status", send_id)
    assert status.returncode == 0, status.stdout + status.stderr
    out = status.stdout
    assert out.startswith(f"issue-{number} send {send_id}: running"), out
    header = next(line for line in out.splitlines() if line.strip().startswith("edition"))
    assert header.split() == [
        "edition", "planned", "sent", "deferred", "failed", "bounced", "other", "done", "rate",
        "left",
    ]  # fmt: skip
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:5]}
    assert {"en", "be", "ru"} <= set(rows)
    en, ru = rows["en"], rows["ru"]
    # planned, sent, deferred, failed, bounced, other (a deferred one may be on its retry now)
    assert int(en[0]) >= 2
    assert int(en[2]) + int(en[5]) >= 2, f"en shows its deferred deliveries: {en}"
    assert int(ru[3]) >= 1, f"ru shows its failed delivery: {ru}"
    assert "top deferral reasons:" in out
    busy_reason = r"\b2x deferred +451 4\.2\.0 mailbox busy, try again later  \[example\.org 2\]"
    assert re.search(busy_reason, out), out
    assert "top failure reasons:" in out
    assert re.search(r"\b1x failed +554 5\.7\.1 message refused by policy", out), out

    test = await services.cli(
        "issue", "send", str(folder), "--no-spam", "--test-to", "editor@example.net"
    )
    assert test.returncode == 0, test.stdout + test.stderr
    test_status = await services.cli("send", "status", send_id_of(test))
    assert "TEST send to " in test_status.stdout
    assert "editor@example.net" not in test_status.stdout, "the address is masked"
    assert "(not counted with real sends)" in test_status.stdout


async def test_the_admin_api_and_the_editor_page_refuse_a_second_send_and_offer_the_choices(
    settings: Settings, tmp_path: Path
) -> None:
    admin = {"Authorization": "Bearer test-admin-token"}
    sends = "/admin/api/issues/sample-issue/sends"
    body = {"segments": ["en", "ru"], "confirm": True}
    async with running_renderer(settings, tmp_path) as renderer, renderer.client() as client:
        first = await client.post(sends, headers=admin, json=body)
        assert first.status_code == 202, first.text
        first_id = first.json()["send_id"]
        again = await client.post(sends, headers=admin, json=body)
        assert again.status_code == 409, again.text
        refusal = again.json()
        assert "issue 50 (2021-12-13 .. 2021-12-19) already has 1 send(s)" in refusal["detail"]
        assert '"intent": "only_new"' in refusal["detail"]
        assert [e["send_id"] for e in refusal["earlier_sends"]] == [first_id]
        assert refusal["choices"] == ["only_new", "resend_all"]
        only_new = await client.post(sends, headers=admin, json={**body, "intent": "only_new"})
        assert only_new.status_code == 202, only_new.text
        assert only_new.json()["intent"] == "only_new"
        unconfirmed = await client.post(sends, headers=admin, json={**body, "intent": "resend_all"})
        assert unconfirmed.status_code == 422
        assert "50 expected, nothing given" in unconfirmed.json()["detail"]
        resent = await client.post(
            sends, headers=admin, json={**body, "intent": "resend_all", "confirm_issue": 50}
        )
        assert resent.status_code == 202, resent.text

        await client.post("/editor/login", data={"token": "test-admin-token"})
        page = await client.get("/editor/issue/sample-issue")
        assert "Issue 50 has already been sent" in page.text
        assert re.search(
            rf'<td class="mono">{first_id}</td><td data-label="Kind">first send</td>'
            r'<td class="nowrap" data-label="Requested \(UTC\)">[\d-]+ [\d:]+</td>',
            page.text,
        ), "the earlier sends table shows the first send"
        assert 'name="intent" value="only_new" checked' in page.text
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
        assert csrf is not None
        form = {"csrf": csrf.group(1), "segments": ["en"], "fallbacks": ""}
        plain = await client.post("/editor/issue/sample-issue/send", data=form)
        assert plain.status_code == 409
        assert "already has 3 send(s)" in plain.text
        assert "Only readers who have not received it" in plain.text
        review = await client.post(
            "/editor/issue/sample-issue/send",
            data={**form, "intent": "resend_all", "confirm_issue": "50"},
        )
        assert review.status_code == 200, review.text
        assert "Every reader gets this issue again." in review.text
        assert 'name="intent" value="resend_all"' in review.text


async def test_a_reader_who_unticks_an_edition_while_it_waits_gets_only_the_other(
    vhost_url: str,
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    """Both editions of a two-edition reader wait in the retry tier (451); meanwhile the
    reader keeps en only on the preferences page. The retries find ru unwanted."""
    from sqlmodel import col, delete, select

    from shared.db.tables import Delivery, Subscriber, SubscriberLanguage

    address = await reader(sessions, ["en", "ru"], label="unticks")
    send_id = str(uuid.uuid4())
    await dispatch_seed.add_editions(sessions, send_id, ("en", "ru"))
    script = MtaScript(defer={address})
    with ScriptedMta(script) as mta:
        settings = dispatch_seed.make_settings(
            amqp_url=vhost_url, database_url=database_url, smtp_url=mta.url, tmp_path=tmp_path
        )
        async with dispatch_seed.RunningDispatcher(settings):
            await dispatch_seed.plan(vhost_url, send_id, ["en", "ru"])
            await dispatch_seed.wait_until(lambda: mta.handler.replies["451"] >= 2)
            async with sessions() as session:
                subscriber = (
                    await session.exec(select(Subscriber).where(Subscriber.email == address))
                ).one()
                await session.exec(  # type: ignore[call-overload]
                    delete(SubscriberLanguage).where(
                        col(SubscriberLanguage.subscriber_id) == subscriber.id,
                        col(SubscriberLanguage.language) == "ru",
                    )
                )
                await session.commit()
            script.defer.clear()  # the server would take them now
            await dispatch_seed.wait_for_send(sessions, send_id)
        languages = sorted(
            str(a.parsed()["Content-Language"]) for a in mta.handler.accepted if a.rcpt == address
        )
    async with sessions() as session:
        rows = (
            await session.exec(
                select(Delivery.language, Delivery.status).where(
                    Delivery.send_id == send_id, Delivery.email == address
                )
            )
        ).all()
    assert languages == ["en"]
    assert sorted(rows) == [("en", "sent"), ("ru", "unsubscribed")]
