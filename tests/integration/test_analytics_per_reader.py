"""Per-reader analytics end to end (issue 18, ``NEWSLETTER_PER_READER_ANALYTICS=true``).

Through the real site (the subscription app as the public origin forwarding to the renderer,
the dispatcher delivering to a real SMTP server, on the test's vhost and database): a reader
ticks the consent box on the preference page (or on the signup form and confirms), another
does not; only the consenting reader's mail carries per-delivery references on its tracked
links, and only their clicks become ``reader_click`` rows, on top of the aggregate counts
that both readers' clicks make. A withdrawal stops new rows at the next flush (checked against
the ledger, nothing per click), the renderer's sweep deletes the rows a withdrawal left, the
GDPR export lists the rows, an erasure deletes them. With the mode off nothing of it exists.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from newsletter_cli.forms import Form, find_forms
from services.subscription.page_texts import READER_ANALYTICS_CONSENT, READER_ANALYTICS_WAITING
from shared.addresses import address_hash
from shared.db.tables import ConsentRecord, Delivery, LinkClick, ReaderClick, Subscriber
from shared.db.tables.timestamps import utcnow
from shared.reader_refs import ReaderRefs
from shared.tokens import TokenSigner
from tests.support import dispatch_seed
from tests.support.analytics_stack import (
    SECRET,
    AnalyticsStack,
    analytics_stack,
    database_sessions,  # noqa: F401 - the sessions fixture
    tracked_links,
)

pytestmark = pytest.mark.integration

LINKS = {
    "one": "https://example.net/analysis/one",
    "two": "https://example.net/analysis/two",
}
EXTRA = f"\n\nFurther reading: [one]({LINKS['one']}) and [two]({LINKS['two']}).\n"
READER = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
BOX = 'name="reader_analytics"'
# Clicks are counted at once (no burst hold), so a flush writes them within 0.2 s.
ON = {"per_reader_analytics": True, "click_burst_window_s": 0.0}
BE_TEXT = "Улічваць мае пераходы асабіста"
RU_TEXT = "Учитывать мои переходы лично"
WAITING_NOTE = READER_ANALYTICS_WAITING


async def ids_of(sessions: async_sessionmaker[AsyncSession], addresses: Sequence[str]) -> list[int]:
    async with sessions() as session:
        found = {
            email: ident
            for email, ident in (
                await session.exec(
                    select(Subscriber.email, Subscriber.id).where(
                        col(Subscriber.email).in_(list(addresses))
                    )
                )
            ).all()
        }
    return [int(found[a]) for a in addresses]  # type: ignore[arg-type]


async def reader_rows(
    sessions: async_sessionmaker[AsyncSession], subscriber_id: int
) -> list[ReaderClick]:
    async with sessions() as session:
        rows = await session.exec(
            select(ReaderClick)
            .where(ReaderClick.subscriber_id == subscriber_id)
            .order_by(col(ReaderClick.id))
        )
        return list(rows.all())


async def counted(sessions: async_sessionmaker[AsyncSession], issue: int) -> int:
    async with sessions() as session:
        total = await session.exec(
            select(func.coalesce(func.sum(LinkClick.count), 0)).where(
                LinkClick.issue_number == issue, LinkClick.verdict == "counted"
            )
        )
        return int(total.one())


async def ledger(
    sessions: async_sessionmaker[AsyncSession], subscriber_id: int
) -> list[ConsentRecord]:
    async with sessions() as session:
        rows = await session.exec(
            select(ConsentRecord)
            .where(
                ConsentRecord.subscriber_id == subscriber_id,
                ConsentRecord.form == "reader_analytics",
            )
            .order_by(col(ConsentRecord.id))
        )
        return list(rows.all())


def post_form(html: str, base: str, action_part: str) -> Form:
    forms = [
        f
        for f in find_forms(html, base_url=base + "/")
        if f.method == "post" and action_part in f.action
    ]
    assert len(forms) == 1, f"one POST form to {action_part}, found {len(forms)}"
    return forms[0]


def multi(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name, []).append(value)
    return grouped


def box_checked(html: str) -> bool:
    match = re.search(r"<input[^>]*" + BOX + r"[^>]*>", html)
    assert match is not None, "the page has no per-reader analytics box"
    return " checked" in match.group(0)


async def save_preferences(stack: AnalyticsStack, url: str, *, opted_in: bool) -> str:
    """Open the preference page of ``url``, tick or untick the box, save; the answer page."""
    page = await stack.client.get(url.removeprefix(stack.base))
    assert page.status_code == 200, page.text[:300]
    form = post_form(page.text, stack.base, "/preferences")
    pairs = [(k, v) for k, v in form.fields if k != "reader_analytics"]
    if opted_in:
        pairs.append(("reader_analytics", "yes"))
    answer = await stack.client.post(form.action.removeprefix(stack.base), data=multi(pairs))
    assert answer.status_code == 200, answer.text[:300]
    assert "Your preferences are saved." in answer.text
    return answer.text


def ref_of(link: str) -> str | None:
    """The per-delivery reference after a tracked link's token, if any."""
    rest = link.split("/r/", 1)[1]
    return rest.split("/", 1)[1] if "/" in rest else None


async def delivery_of(
    sessions: async_sessionmaker[AsyncSession], send_id: str, subscriber_id: int
) -> int:
    async with sessions() as session:
        found = await session.exec(
            select(Delivery.id).where(
                Delivery.send_id == send_id, Delivery.subscriber_id == subscriber_id
            )
        )
        return int(found.one())  # type: ignore[arg-type]


async def test_only_a_consenting_reader_gets_per_reader_rows_until_withdrawal_and_erasure(
    vhost_url: str,
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    number = random.randint(100_000, 400_000)
    mine = await dispatch_seed.add_subscribers(
        sessions, 2, languages=("en",), prefix=f"perreader{number}"
    )
    yes, no = mine
    yes_id, no_id = await ids_of(sessions, mine)
    # The sweep runs once at start and not again in this test: what a withdrawal stops here is
    # the flush's own check against the ledger.
    async with analytics_stack(
        vhost_url, database_url, tmp_path, **ON, reader_click_sweep_s=3600.0
    ) as stack:
        prefs = stack.links.preferences(yes_id, address_hash(yes))
        page = await stack.client.get(prefs.removeprefix(stack.base))
        assert READER_ANALYTICS_CONSENT in page.text, "the consent text is on the page"
        assert not box_checked(page.text), "unticked until the reader ticks it"
        before = utcnow()
        assert box_checked(await save_preferences(stack, prefs, opted_in=True))
        [grant] = await ledger(sessions, yes_id)
        assert grant.source == "preferences page"
        assert grant.consent_text_version.startswith("reader-analytics-")
        assert grant.given_at >= before
        assert grant.confirmed_at is not None, "an active reader's grant holds at once"
        assert grant.withdrawn_at is None
        other_prefs = stack.links.preferences(no_id, address_hash(no))
        assert not box_checked(await save_preferences(stack, other_prefs, opted_in=False))
        assert await ledger(sessions, no_id) == [], "no box ticked: nothing in the ledger"

        mails = await stack.send_issue(sessions, number=number, extra=EXTRA)
        yes_links, yes_text = tracked_links(mails[yes], base=stack.base, lang="en", with_ref=True)
        no_links, no_text = tracked_links(mails[no], base=stack.base, lang="en", with_ref=True)
        assert len(yes_links) == len(no_links) == 3
        assert yes_text == yes_links, "the plain part carries the same references"
        assert all(ref_of(link) is None for link in no_links + no_text), (
            "a reader who did not consent gets the aggregate links only"
        )
        refs = {ref_of(link) for link in yes_links}
        assert len(refs) == 1, f"one reference per delivery, got {refs}"
        [ref] = refs
        assert ref is not None
        assert len(ref) == 20
        delivery = await delivery_of(sessions, stack.last_send_id, yes_id)
        assert ReaderRefs(TokenSigner(SECRET)).check(ref) == delivery
        assert [link.rsplit("/", 1)[0] for link in yes_links] == no_links, (
            "the same tracked link, with the reference after it"
        )

        client = stack.client
        for link in (yes_links[1], no_links[1]):
            answer = await client.get(link.removeprefix(stack.base), headers={"user-agent": READER})
            assert answer.status_code == 302, answer.text[:300]
            assert answer.headers["location"] == LINKS["one"]
        head = await client.head(
            yes_links[0].removeprefix(stack.base), headers={"user-agent": READER}
        )
        assert head.status_code == 302
        forged = ref[:-1] + ("A" if ref[-1] != "A" else "B")
        tampered = await client.get(
            f"{no_links[2].removeprefix(stack.base)}/{forged}", headers={"user-agent": READER}
        )
        assert tampered.status_code == 302, "a bad reference still redirects, as an aggregate"

        await dispatch_seed.eventually(
            lambda: _has(sessions, yes_id, 1), what="the consenting reader's click written"
        )
        await dispatch_seed.eventually(
            lambda: _counted_is(sessions, number, 3), what="three readers' clicks counted"
        )
        [row] = await reader_rows(sessions, yes_id)
        assert (row.issue_number, row.edition, row.article, row.link) == (number, "en", 0, 1)
        assert row.delivery_id == delivery
        assert await reader_rows(sessions, no_id) == [], "no rows of a reader who did not consent"

        export = await client.get(f"/api/subscribers/{yes_id}/data", headers=stack.admin)
        assert export.status_code == 200, export.text[:300]
        data = export.json()
        assert data["subscriber"]["email"] == yes
        [click] = data["reader_clicks"]
        assert click["url"] == LINKS["one"]
        assert (click["issue_number"], click["edition"], click["link"]) == (number, "en", 1)
        assert [c["form"] for c in data["consents"]].count("reader_analytics") == 1
        other = (await client.get(f"/api/subscribers/{no_id}/data", headers=stack.admin)).json()
        assert other["reader_clicks"] == []
        assert "reader_analytics" not in [c["form"] for c in other["consents"]]

        # Withdrawal on the preference page: the ledger keeps when and how.
        assert not box_checked(await save_preferences(stack, prefs, opted_in=False))
        [withdrawn] = await ledger(sessions, yes_id)
        assert withdrawn.withdrawn_at is not None
        assert withdrawn.withdrawal_method == "preferences"
        answer = await client.get(
            yes_links[2].removeprefix(stack.base), headers={"user-agent": READER}
        )
        assert answer.status_code == 302
        assert answer.headers["location"] == LINKS["two"]
        await dispatch_seed.eventually(
            lambda: _counted_is(sessions, number, 4), what="the click after withdrawal counted"
        )
        # The flush that counted it has written (or refused) its per-reader entry too.
        assert [r.link for r in await reader_rows(sessions, yes_id)] == [1], (
            "no per-reader row after the withdrawal"
        )

        # GDPR erasure: SubscriberErased reaches the renderer, which deletes the rows.
        erased = await client.delete(f"/api/subscribers/{yes_id}", headers=stack.admin)
        assert erased.status_code == 200, erased.text[:300]
        await dispatch_seed.eventually(
            lambda: _has(sessions, yes_id, 0), what="the erased reader's clicks deleted"
        )
        gone = await client.get(f"/api/subscribers/{yes_id}/data", headers=stack.admin)
        assert gone.status_code == 404


async def _has(sessions: async_sessionmaker[AsyncSession], subscriber_id: int, n: int) -> bool:
    return len(await reader_rows(sessions, subscriber_id)) == n


async def _counted_is(sessions: async_sessionmaker[AsyncSession], issue: int, n: int) -> bool:
    return await counted(sessions, issue) == n


async def opt_in(stack: AnalyticsStack, page: str, *, ticked: bool) -> None:
    """Post the confirmation page's form, with or without its per-reader analytics box."""
    form = post_form(page, stack.base, "/confirm")
    pairs = [(k, v) for k, v in form.fields if k != "reader_analytics"]
    if ticked:
        pairs.append(("reader_analytics", "yes"))
    done = await stack.client.post(form.action.removeprefix(stack.base), data=multi(pairs))
    assert done.status_code == 200, done.text[:300]


async def sign_up(stack: AnalyticsStack, address: str, *, ticked: bool) -> None:
    """Post the public signup form for ``address`` (anyone can), box ticked or not."""
    page = await stack.client.get("/", params={"lang": "en"})
    form = post_form(page.text, stack.base, "/subscribe")
    pairs = [(k, v) for k, v in form.fields if k not in {"email", "reader_analytics"}]
    pairs.append(("email", address))
    if ticked:
        pairs.append(("reader_analytics", "yes"))
    answer = await stack.client.post("/subscribe", data=multi(pairs))
    assert answer.status_code == 200, answer.text[:300]


def confirm_link(mail: EmailMessage, base: str) -> str:
    text = mail.get_body(("plain",))
    assert text is not None
    found = re.findall(re.escape(base) + r"/confirm\?token=[A-Za-z0-9_.\-]+", text.get_content())
    assert found, "the confirmation mail has a confirmation link"
    return found[0]


async def test_a_signup_grant_holds_from_the_opt_in_and_an_unsubscribe_deletes_the_rows(
    vhost_url: str,
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    number = random.randint(400_001, 700_000)
    address = f"signup{number}.{random.randint(0, 10**9)}@example.org"
    async with analytics_stack(
        vhost_url, database_url, tmp_path, **ON, reader_click_sweep_s=0.3
    ) as stack:
        client = stack.client
        for lang, text in (("be", BE_TEXT), ("ru", RU_TEXT)):
            page = await client.get("/", params={"lang": lang})
            assert text in page.text, f"{lang}: the consent text is translated"
            assert not box_checked(page.text)
        page = await client.get("/", params={"lang": "en"})
        assert READER_ANALYTICS_CONSENT in page.text
        assert not box_checked(page.text), "unticked by default"
        form = post_form(page.text, stack.base, "/subscribe")
        pairs = [*form.fields, ("email", address), ("reader_analytics", "yes")]
        pairs = [(k, v) for k, v in pairs if not (k == "email" and v == "")]
        answer = await client.post("/subscribe", data=multi(pairs))
        assert answer.status_code == 200, answer.text[:300]
        [subscriber_id] = await ids_of(sessions, [address])
        [grant] = await ledger(sessions, subscriber_id)
        assert (grant.source, grant.consent_language) == ("signup form", "en")
        assert grant.confirmed_at is None, "not before the double opt-in"

        await dispatch_seed.wait_until(
            lambda: any(a.rcpt == address for a in stack.mta.handler.accepted), timeout=60
        )
        mail = next(a.parsed() for a in stack.mta.handler.accepted if a.rcpt == address)
        page = await client.get(confirm_link(mail, stack.base).removeprefix(stack.base))
        assert READER_ANALYTICS_CONSENT in page.text, "the box is on the confirmation page"
        assert WAITING_NOTE in page.text, "the page says the signup's tick waits for this one"
        assert not box_checked(page.text), "unticked: only the owner's own tick counts"
        await opt_in(stack, page.text, ticked=True)
        [grant] = await ledger(sessions, subscriber_id)
        assert grant.confirmed_at is not None, "the opt-in with the box ticked confirms the grant"
        assert grant.source == "signup form"

        mails = await stack.send_issue(sessions, number=number, extra=EXTRA)
        links, _ = tracked_links(mails[address], base=stack.base, lang="en", with_ref=True)
        assert all(ref_of(link) for link in links)
        answer = await client.get(links[1].removeprefix(stack.base), headers={"user-agent": READER})
        assert answer.status_code == 302
        await dispatch_seed.eventually(
            lambda: _has(sessions, subscriber_id, 1), what="the reader's click written"
        )

        # RFC 8058 one-click unsubscribe from the mail's header withdraws every consent; the
        # renderer's sweep deletes what was recorded under it.
        one_click = re.search(
            r"<(http[^>]+one-click[^>]+)>", str(mails[address]["List-Unsubscribe"])
        )
        assert one_click is not None
        unsubscribed = await client.post(
            one_click.group(1).removeprefix(stack.base),
            content=b"List-Unsubscribe=One-Click",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert unsubscribed.status_code == 200, unsubscribed.text[:300]
        [withdrawn] = await ledger(sessions, subscriber_id)
        assert withdrawn.withdrawn_at is not None
        assert withdrawn.withdrawal_method == "one-click"
        await dispatch_seed.eventually(
            lambda: _has(sessions, subscriber_id, 0), what="the withdrawn reader's clicks deleted"
        )
        export = await client.get(f"/api/subscribers/{subscriber_id}/data", headers=stack.admin)
        assert export.json()["reader_clicks"] == []
        assert export.json()["consents"][-1]["withdrawal_method"] == "one-click"


async def test_a_box_ticked_by_a_stranger_on_the_signup_form_is_not_confirmed_by_the_opt_in(
    vhost_url: str,
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    """The race: the owner signs up without the box; before they open their confirmation
    mail, a stranger posts the public form again for the same address with the box ticked.
    The owner confirms without ticking it: the stranger's grant is withdrawn, not confirmed,
    and the reader's issue mail names no delivery. A second reader who ticks the box only on
    the confirmation page (none ticked at signup) is recorded from there."""
    number = random.randint(400_001, 700_000)
    owner = f"race{number}.{random.randint(0, 10**9)}@example.org"
    late = f"late{number}.{random.randint(0, 10**9)}@example.org"
    async with analytics_stack(vhost_url, database_url, tmp_path, **ON) as stack:
        await sign_up(stack, owner, ticked=False)
        await sign_up(stack, late, ticked=False)
        await sign_up(stack, owner, ticked=True)  # the stranger
        owner_id, late_id = await ids_of(sessions, [owner, late])
        [wish] = await ledger(sessions, owner_id)
        assert (wish.confirmed_at, wish.withdrawn_at) == (None, None), "a grant that waits"
        assert await ledger(sessions, late_id) == []

        await dispatch_seed.wait_until(
            lambda: {owner, late} <= {a.rcpt for a in stack.mta.handler.accepted}, timeout=60
        )
        mails = {a.rcpt: a.parsed() for a in stack.mta.handler.accepted}
        page = await stack.client.get(
            confirm_link(mails[owner], stack.base).removeprefix(stack.base)
        )
        assert WAITING_NOTE in page.text
        assert not box_checked(page.text), "the stranger's tick does not show as the owner's"
        prefs = stack.links.preferences(owner_id, address_hash(owner))
        owner_page = await stack.client.get(prefs.removeprefix(stack.base))
        assert not box_checked(owner_page.text), "a waiting grant is no consent on that page"
        await opt_in(stack, page.text, ticked=False)
        [wish] = await ledger(sessions, owner_id)
        assert wish.confirmed_at is None, "the owner did not tick it: not confirmed"
        assert wish.withdrawn_at is not None
        assert wish.withdrawal_method == "not ticked at opt-in"

        page = await stack.client.get(
            confirm_link(mails[late], stack.base).removeprefix(stack.base)
        )
        assert WAITING_NOTE not in page.text, "nothing was ticked at this signup"
        await opt_in(stack, page.text, ticked=True)
        [grant] = await ledger(sessions, late_id)
        assert grant.source == "confirmation page"
        assert grant.confirmed_at is not None

        sent = await stack.send_issue(sessions, number=number, extra=EXTRA)
        owner_links, owner_text = tracked_links(
            sent[owner], base=stack.base, lang="en", with_ref=True
        )
        assert owner_links, "the owner's mail has tracked links"
        assert all(ref_of(link) is None for link in owner_links + owner_text), (
            "no per-reader reference for a reader who did not consent"
        )
        late_links, _ = tracked_links(sent[late], base=stack.base, lang="en", with_ref=True)
        assert late_links
        assert all(ref_of(link) for link in late_links)


async def test_with_the_mode_off_there_is_no_box_no_reference_and_no_row(
    vhost_url: str,
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    number = random.randint(700_001, 999_000)
    [reader] = await dispatch_seed.add_subscribers(
        sessions, 1, languages=("en",), prefix=f"modeoff{number}"
    )
    [reader_id] = await ids_of(sessions, [reader])
    # A consent given while the mode was on, still standing: the mode off outranks it.
    async with sessions() as session:
        now = utcnow()
        session.add(
            ConsentRecord(
                subscriber_id=reader_id,
                email_hash=address_hash(reader),
                consent_text_version="reader-analytics-2026-12-v1",
                consent_language="en",
                form="reader_analytics",
                source="preferences page",
                given_at=now,
                confirmed_at=now,
            )
        )
        await session.commit()
    async with analytics_stack(
        vhost_url, database_url, tmp_path, click_burst_window_s=0.0
    ) as stack:
        client = stack.client
        page = await client.get("/", params={"lang": "en"})
        assert BOX not in page.text
        assert READER_ANALYTICS_CONSENT not in page.text
        prefs = stack.links.preferences(reader_id, address_hash(reader))
        assert BOX not in (await client.get(prefs.removeprefix(stack.base))).text
        mails = await stack.send_issue(sessions, number=number, extra=EXTRA)
        links, text_links = tracked_links(mails[reader], base=stack.base, lang="en", with_ref=True)
        assert len(links) == 3
        assert all(ref_of(link) is None for link in links + text_links)
        ref = ReaderRefs(TokenSigner(SECRET)).mint(
            await delivery_of(sessions, stack.last_send_id, reader_id)
        )
        path = links[1].removeprefix(stack.base)
        assert (await client.get(path, headers={"user-agent": READER})).status_code == 302
        with_ref = await client.get(f"{path}/{ref}", headers={"user-agent": READER})
        assert with_ref.status_code == 404, "no reference route with the mode off"
        await dispatch_seed.eventually(
            lambda: _counted_is(sessions, number, 1), what="the click counted"
        )
    # The renderer has stopped: its last flush is done.
    assert await reader_rows(sessions, reader_id) == [], "nothing per reader with the mode off"
