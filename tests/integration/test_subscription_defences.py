"""The signup form's defences, through the real app, database and RabbitMQ."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
import structlog
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from sqlmodel import func, select

from services.subscription.app import create_app
from services.subscription.mail_commands import TransactionalMail
from services.subscription.policy import SignupPolicy
from shared.addresses import address_hash
from shared.db.tables import Subscriber, Suppression
from shared.links import payload
from shared.messaging.publisher import PublishError
from tests.integration.subscription_support import (
    ADMIN_TOKEN,
    PUBLIC_URL,
    QUICK,
    as_multi,
    command_tap,
    follow_form,
    only_form,
    private_amqp_url,
    running_app,
    settings_for,
    sign_up,
    signup_form,
    unique_address,
)
from tests.support.database import session_on

pytestmark = pytest.mark.integration
__all__ = ["private_amqp_url"]


async def _count(database_url: str, email: str) -> int:
    async with session_on(database_url) as session:
        found = await session.exec(
            select(func.count()).select_from(Subscriber).where(Subscriber.email == email)
        )
        return int(found.one())


async def _status(database_url: str, email: str) -> str | None:
    async with session_on(database_url) as session:
        found = await session.exec(select(Subscriber.status).where(Subscriber.email == email))
        return found.first()


async def _suppress(database_url: str, email: str) -> None:
    async with session_on(database_url) as session:
        session.add(Suppression(email_hash=address_hash(email), reason="hard_bounce"))
        await session.commit()


async def test_the_answer_is_the_same_for_new_pending_active_unsubscribed_and_suppressed(
    private_amqp_url: str, database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(private_amqp_url, database_url, tmp_path)
    new, pending, active, unsubscribed, suppressed = (unique_address(k) for k in "npaus")
    async with command_tap(private_amqp_url) as tap, running_app(settings) as (_, client):
        for email in (pending, active, unsubscribed):
            await sign_up(client, email)
        for email in (active, unsubscribed):
            [command] = await tap.wait_for(email, "confirmation")
            await follow_form(client, command.links["confirm_url"], "/confirm")
        [command] = await tap.wait_for(unsubscribed, "confirmation")
        await follow_form(client, command.links["unsubscribe_url"], "/unsubscribe")
        await _suppress(database_url, suppressed)
        assert await _status(database_url, active) == "active"
        assert await _status(database_url, unsubscribed) == "unsubscribed"

        answers = {}
        for email in (new, pending, active, unsubscribed, suppressed):
            response = await sign_up(client, email)
            answers[email] = (
                response.status_code,
                response.text,
                response.headers.get("set-cookie"),
            )
        assert len(set(answers.values())) == 1, "the answer tells the address's state apart"
        assert next(iter(answers.values()))[0] == 200
        # ...while what happened differs: the suppressed address is neither stored nor mailed.
        assert await _count(database_url, suppressed) == 0
        await tap.settle()
        assert tap.for_address(suppressed) == []
        assert len(tap.for_address(new, "confirmation")) == 1


async def test_bots_get_the_normal_answer_and_nothing_is_stored_or_sent(
    private_amqp_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    settings = settings_for(private_amqp_url, sqlite_url, tmp_path)
    human, honeypot_bot, fast_bot, forged_bot = (unique_address(k) for k in "hbfx")
    # A time trap of ten minutes: the fast bot posts the stamp the page just gave it, however
    # slowly a loaded machine serves it; the human posts a stamp signed eleven minutes ago, so
    # neither side races the wall clock.
    slow_policy = SignupPolicy(signup_min_seconds=600.0, response_floor_s=0.0, ip_limit=1000)
    typed_slowly = _form_stamp_signed_ago(settings.secret_key.get_secret_value(), 660)
    async with (
        command_tap(private_amqp_url) as tap,
        running_app(settings, slow_policy) as (
            _,
            client,
        ),
    ):
        page = await client.get("/")
        form = signup_form(page.text)
        honeypot = await client.post(
            form.action,
            data=as_multi(form.filled({"email": honeypot_bot, "website": "http://spam.example"})),
        )
        fast = await client.post(form.action, data=as_multi(form.filled({"email": fast_bot})))
        forged = await client.post(
            form.action,
            data=as_multi(form.filled({"email": forged_bot, "form_stamp": "signup.AAAA.BBBB"})),
        )
        normal = await client.post(
            form.action, data=as_multi(form.filled({"email": human, "form_stamp": typed_slowly}))
        )
        assert {r.status_code for r in (honeypot, fast, forged, normal)} == {200}
        assert honeypot.text == fast.text == forged.text == normal.text
        for bot in (honeypot_bot, fast_bot, forged_bot):
            assert await _count(sqlite_url, bot) == 0, bot
        await tap.wait_for(human, "confirmation")
        assert [m for m in tap.seen if m.to in {honeypot_bot, fast_bot, forged_bot}] == []


async def test_one_confirmation_mail_per_address_per_hour_however_often_entered(
    private_amqp_url: str, database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(private_amqp_url, database_url, tmp_path)
    email = unique_address("bombed")
    async with command_tap(private_amqp_url) as tap, running_app(settings) as (_, client):
        answers = await asyncio.gather(*(sign_up(client, email) for _ in range(8)))
        assert {a.status_code for a in answers} == {200}
        await tap.wait_for(email, "confirmation")
        await tap.settle(0.5)
        assert len(tap.for_address(email)) == 1
        assert await _count(database_url, email) == 1


async def test_one_confirmation_mail_per_mailbox_however_its_address_is_varied(
    private_amqp_url: str, database_url: str, tmp_path: Path
) -> None:
    """Subaddresses (``+tag``, RFC 5233) and, on Gmail, dots reach one inbox: its variants get
    one mail per interval between them all (no mail-bombing through variants), yet cannot keep
    the mailbox's own address from its mail; every variant is stored as typed."""
    settings = settings_for(private_amqp_url, database_url, tmp_path)
    user = unique_address("inbox").split("@")[0].replace(".", "")
    dotted = f"{user[:3]}.{user[3:]}"
    variants = {
        "example.org": [f"{user}+news@example.org", f"{user.upper()}+x@example.org"],
        "gmail.com": [f"{dotted}@gmail.com", f"{dotted}+a@googlemail.com"],
    }
    own = {"example.org": f"{user}@example.org", "gmail.com": f"{user}@gmail.com"}
    other = unique_address("neighbour")
    typed = [*variants["example.org"], *variants["gmail.com"], other]
    async with command_tap(private_amqp_url) as tap, running_app(settings) as (_, client):
        answers = await asyncio.gather(*(sign_up(client, e) for e in typed))
        assert {a.status_code for a in answers} == {200}
        await tap.wait_for(other, "confirmation")
        await tap.settle(1.0)
        for domain, group in variants.items():
            mails = [m for e in group for m in tap.for_address(e.lower(), "confirmation")]
            assert len(mails) == 1, (domain, [m.to for m in mails])
        for email in typed:
            assert await _count(database_url, email.lower()) == 1, email
        # The mailbox's own address is not starved by its variants.
        for address in own.values():
            assert (await sign_up(client, address)).status_code == 200
            await tap.wait_for(address, "confirmation")
        late = f"{user}+later@example.org"
        assert (await sign_up(client, late)).status_code == 200
        await tap.settle(0.5)
        assert tap.for_address(late) == []
        async with session_on(database_url) as session:
            slot = await session.exec(
                select(Subscriber.last_confirmation_sent_at).where(Subscriber.email == late)
            )
            assert slot.one() is None, "a variant that was not mailed keeps its own slot free"
        # Erasing one of the mailbox's addresses deletes the mailbox's slot with it.
        erased = await client.post(
            "/api/erasures",
            json={"email": late},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert erased.status_code == 200, erased.text
        again = f"{user}+again@example.org"
        assert (await sign_up(client, again)).status_code == 200
        await tap.wait_for(again, "confirmation")


async def test_the_mailbox_limit_holds_across_two_replicas_of_the_service(
    private_amqp_url: str, postgres_url: str, tmp_path: Path
) -> None:
    settings = settings_for(private_amqp_url, postgres_url, tmp_path)
    user = unique_address("replica-box").split("@")[0]
    variants = [f"{user}+{n}@example.org" for n in range(10)]
    async with (
        command_tap(private_amqp_url) as tap,
        running_app(settings) as (_, first),
        running_app(settings) as (_, second),
    ):
        clients = (first, second) * 5
        answers = await asyncio.gather(
            *(sign_up(c, e) for c, e in zip(clients, variants, strict=True))
        )
        assert {a.status_code for a in answers} == {200}
        await tap.settle(1.0)
        assert len([m for e in variants for m in tap.for_address(e)]) == 1


async def test_per_ip_limit_answers_429_with_retry_after(
    private_amqp_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    settings = settings_for(private_amqp_url, sqlite_url, tmp_path)
    policy = SignupPolicy(signup_min_seconds=0.0, response_floor_s=0.0, ip_limit=3)
    async with running_app(settings, policy) as (_, client):
        statuses = [(await sign_up(client, unique_address())).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        limited = await sign_up(client, unique_address())
        assert int(limited.headers["retry-after"]) > 0


async def test_the_per_ip_limit_holds_a_whole_ipv6_64(
    private_amqp_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    """One host may use any address of its /64 (privacy addresses change on their own): the
    limit counts the /64, and a neighbouring /64 has its own."""
    settings = settings_for(private_amqp_url, sqlite_url, tmp_path)
    policy = SignupPolicy(signup_min_seconds=0.0, response_floor_s=0.0, ip_limit=3)
    app = create_app(settings, policy=policy)

    def client(host: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(host, 50000))
        return httpx.AsyncClient(transport=transport, base_url=PUBLIC_URL)

    rotating = ["2001:db8:aa:bb::1", "2001:db8:aa:bb:1::2", "2001:db8:aa:bb:ffff::3"]
    async with app.router.lifespan_context(app):
        statuses = []
        for host in [*rotating, "2001:db8:aa:bb:abcd::4"]:
            async with client(host) as one:
                statuses.append((await sign_up(one, unique_address())).status_code)
        assert statuses == [200, 200, 200, 429], statuses
        async with client("2001:db8:aa:bc::1") as neighbour:
            assert (await sign_up(neighbour, unique_address())).status_code == 200


async def test_csrf_is_required_on_every_form_but_the_one_click_post(
    private_amqp_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    settings = settings_for(private_amqp_url, sqlite_url, tmp_path)
    email = unique_address("csrf")
    async with command_tap(private_amqp_url) as tap, running_app(settings) as (_, client):
        page = await client.get("/")
        form = signup_form(page.text)
        forged = [(k, v) for k, v in form.filled({"email": email}) if k != "csrf_token"]
        assert (await client.post(form.action, data=as_multi(forged))).status_code == 403
        client.cookies.clear()
        no_cookie = await client.post(form.action, data=as_multi(form.filled({"email": email})))
        assert no_cookie.status_code == 403
        assert await _count(sqlite_url, email) == 0

        await sign_up(client, email)
        [command] = await tap.wait_for(email, "confirmation")
        page = await client.get(command.links["confirm_url"])
        confirm = only_form(page.text, "/confirm")
        client.cookies.clear()
        refused = await client.post(confirm.action, data=as_multi(confirm.filled({})))
        assert refused.status_code == 403
        assert await _status(sqlite_url, email) == "pending"
        page = await client.get(command.links["unsubscribe_url"])
        unsubscribe = only_form(page.text, "/unsubscribe")
        client.cookies.clear()
        refused = await client.post(unsubscribe.action, data=as_multi(unsubscribe.filled({})))
        assert refused.status_code == 403
        assert await _status(sqlite_url, email) == "pending"


HOSTILE = [
    "alice@example.org\r\nBcc: victim@example.org",
    "alice@example.org\nTo: victim@example.org",
    "alice@example.org\x00",
    "alice@example.org)<bob@example.org",
    '"alice"@example.org',
    "<script>alert(1)</script>@example.org",
    "x" * 10_240,
    "alice@example.org, bob@example.org",
]


async def test_hostile_input_gets_a_clear_4xx_and_never_a_command(
    private_amqp_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    settings = settings_for(private_amqp_url, sqlite_url, tmp_path)
    async with command_tap(private_amqp_url) as tap, running_app(settings) as (_, client):
        for value in HOSTILE:
            answer = await sign_up(client, value)
            assert answer.status_code == 422, (value[:40], answer.status_code)
            assert "<script>alert" not in answer.text
            assert "victim" not in "".join(answer.headers.values())
        # Every field hostile at once: still a clear answer, never a 500.
        page = await client.get("/")
        form = signup_form(page.text)
        huge = "\r\n<script>{{7*7}}</script>\x00" + "y" * 10_240
        pairs = form.filled({"email": huge, "lang": huge, "website": ""})
        pairs.append(("languages", huge))
        answer = await client.post(form.action, data=as_multi(pairs))
        assert answer.status_code == 422
        assert "{{7*7}}" not in answer.text or "&lt;script&gt;{{7*7}}" in answer.text
        assert ">49<" not in answer.text
        for url in (
            "/confirm?token=" + "a" * 10_240,
            "/confirm?token=%0d%0aSet-Cookie:%20x=y",
            "/unsubscribe?token={{7*7}}",
            "/preferences?token=%00",
            "/?lang=%0d%0aX-Injected:%201",
        ):
            answer = await client.get(url)
            assert answer.status_code in {200, 400}, url
            assert "x-injected" not in answer.headers
            assert "set-cookie" not in answer.headers or "x=y" not in answer.headers["set-cookie"]
        # Template syntax in a valid address is stored inert and mailed as typed.
        inert = unique_address("{{7*7}}")
        assert (await sign_up(client, inert)).status_code == 200
        [command] = await tap.wait_for(inert, "confirmation")
        assert command.to == inert
        await tap.settle()
        assert all("\n" not in m.to and "victim" not in m.to for m in tap.seen)


async def test_tampered_wrong_purpose_and_expired_tokens_change_nothing(
    private_amqp_url: str, database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(private_amqp_url, database_url, tmp_path)
    email = unique_address("tokens")
    policy = SignupPolicy(
        signup_min_seconds=0.0, response_floor_s=0.0, ip_limit=1000, confirmation_interval_s=0
    )
    async with command_tap(private_amqp_url) as tap, running_app(settings, policy) as (_, client):
        await sign_up(client, email)
        [command] = await tap.wait_for(email, "confirmation")
        confirm_token = command.links["confirm_url"].split("token=")[1]
        page = await client.get(command.links["confirm_url"])
        form = only_form(page.text, "/confirm")
        for bad in (
            confirm_token[:-3] + "xyz",
            command.links["unsubscribe_url"].split("token=")[1],
            command.links["preferences_url"].split("token=")[1],
        ):
            answer = await client.post(form.action, data=as_multi(form.filled({"token": bad})))
            assert answer.status_code == 400
        # Unsubscribe or preferences with a confirmation token: refused.
        for path in ("/unsubscribe", "/preferences"):
            answer = await client.get(f"{path}?token={confirm_token}")
            assert answer.status_code == 400
        assert await _status(database_url, email) == "pending"

        # An expired confirmation link offers a new mail (and changes nothing by itself).
        expired_token = _eight_days_old_confirm_token(
            settings.secret_key.get_secret_value(), command.subscriber_id, email
        )
        page = await client.get(f"/confirm?token={expired_token}")
        assert page.status_code == 200
        resend = only_form(page.text, "/confirm/resend")
        stale_confirm = await client.post(
            form.action, data=as_multi(form.filled({"token": expired_token}))
        )
        assert "/confirm/resend" in stale_confirm.text
        assert await _status(database_url, email) == "pending"
        answer = await client.post(resend.action, data=as_multi(resend.filled({})))
        assert answer.status_code == 200
        await tap.wait_for(email, "confirmation", count=2)


def _form_stamp_signed_ago(secret: str, seconds: int) -> str:
    """The signup form's time-trap stamp as the app signs it, dated ``seconds`` in the past."""

    class Earlier(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - seconds

    return Earlier(secret, salt="newsletter.form-stamp").sign("signup").decode()


def _eight_days_old_confirm_token(secret: str, subscriber_id: int, email: str) -> str:
    """A correctly signed confirmation token issued eight days ago (the limit is seven)."""

    class EightDaysAgo(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 8 * 24 * 3600

    serializer = URLSafeTimedSerializer(secret, salt="newsletter.confirm", signer=EightDaysAgo)
    return str(serializer.dumps(payload(subscriber_id, address_hash(email))))


async def test_logs_hold_no_tokens_links_or_whole_addresses(
    private_amqp_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    settings = settings_for(private_amqp_url, sqlite_url, tmp_path)
    email = unique_address("private")
    with structlog.testing.capture_logs() as logs:
        async with (
            command_tap(private_amqp_url) as tap,
            running_app(settings, QUICK) as (
                _,
                client,
            ),
        ):
            await sign_up(client, email)
            [command] = await tap.wait_for(email, "confirmation")
            await follow_form(client, command.links["confirm_url"], "/confirm")
            await client.post(command.links["one_click_url"], content=b"List-Unsubscribe=One-Click")
            await client.get("/confirm?token=garbage")
    assert any(entry["event"] == "signup_stored" for entry in logs)
    assert any(entry["event"] == "unsubscribed" for entry in logs)
    requests = [entry for entry in logs if entry["event"] == "request_handled"]
    assert {"/subscribe", "/confirm", "/unsubscribe/one-click"} <= {r["path"] for r in requests}
    secrets = [email, *command.links.values()]
    secrets += [url.split("token=")[1] for url in command.links.values() if "token=" in url]
    dumped = repr(logs)
    leaked = [s[:30] for s in secrets if s in dumped]
    assert not leaked, f"logs contain {leaked}"


async def test_no_answer_redirects_anywhere_but_our_own_paths(
    private_amqp_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    settings = settings_for(private_amqp_url, sqlite_url, tmp_path)
    async with running_app(settings) as (_, client):
        for url in (
            "/?next=https://evil.example/",
            "//evil.example/",
            "/confirm/",
            "/%2F%2Fevil.example/",
            "/unsubscribe/?token=x&redirect=//evil.example",
            "/preferences/",
        ):
            answer = await client.get(url)
            assert "location" not in answer.headers, (url, answer.headers.get("location"))
            assert answer.status_code < 500
        page = await client.get("/")
        assert 'action="/subscribe"' in page.text
        assert "evil" not in page.text


class RefusingPublisher:
    """The publisher seam: the broker refuses (no confirm / unroutable)."""

    async def publish(self, message: object, *, routing_key: str) -> None:
        raise PublishError(f"{routing_key}: refused")


async def test_a_broker_refusal_answers_503_and_a_retry_still_gets_its_mail(
    private_amqp_url: str, database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(private_amqp_url, database_url, tmp_path)
    email = unique_address("retry")
    async with command_tap(private_amqp_url) as tap, running_app(settings) as (app, client):
        working = app.state.mail
        app.state.mail = TransactionalMail(
            links=app.state.components.links,
            publisher=RefusingPublisher(),
            public_url=settings.public_url,
        )
        refused = await sign_up(client, email)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "60"
        app.state.mail = working
        again = await sign_up(client, email)
        assert again.status_code == 200
        # The failed attempt gave its hourly slot back, so the retry is mailed.
        await tap.wait_for(email, "confirmation")


async def test_the_hourly_limit_holds_across_two_replicas_of_the_service(
    private_amqp_url: str, postgres_url: str, tmp_path: Path
) -> None:
    settings = settings_for(private_amqp_url, postgres_url, tmp_path)
    email = unique_address("replicas")
    async with (
        command_tap(private_amqp_url) as tap,
        running_app(settings) as (_, first),
        running_app(settings) as (_, second),
    ):
        answers = await asyncio.gather(*(sign_up(client, email) for client in (first, second) * 5))
        assert {a.status_code for a in answers} == {200}
        await tap.wait_for(email, "confirmation")
        await tap.settle(0.5)
        assert len(tap.for_address(email)) == 1
        assert await _count(postgres_url, email) == 1


async def test_oversized_bodies_are_refused_before_they_are_read(
    private_amqp_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    settings = settings_for(private_amqp_url, sqlite_url, tmp_path)
    async with running_app(settings) as (_, client):
        huge = b"email=" + b"a" * (200 * 1024)
        answer = await client.post(
            "/subscribe",
            content=huge,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert answer.status_code == 413

        async def chunks():  # type: ignore[no-untyped-def]
            for _ in range(100):
                yield b"List-Unsubscribe=One-Click&" + b"x" * 4096

        streamed = await client.post("/unsubscribe/one-click?token=x", content=chunks())
        assert streamed.status_code == 400
