"""The pure parts of send identity and progress: refusals and their wording, grouped SMTP
replies, the per-edition status lines."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from services.dispatcher import progress_view
from services.renderer.issue_sends import (
    EarlierSend,
    IssueAlreadySent,
    IssueIdentity,
    NotSentYet,
    ResendNotConfirmed,
    SendRefused,
    Surface,
    intent_of,
    refusal,
)
from shared.db.tables import SendIntent
from shared.send_progress import LanguageProgress, Reason, SendProgress, reply_key

ISSUE = IssueIdentity("issue-51", 51, date(2021, 12, 20), date(2021, 12, 26))
EARLIER = EarlierSend(
    send_id="11111111-2222-3333-4444-555555555555",
    intent="first",
    requested_at=datetime(2026, 12, 1, 21, 40, tzinfo=UTC),
    status="done",
    date_from=date(2021, 12, 20),
    date_to=date(2021, 12, 26),
    counts={"sent": 30, "failed": 2},
)


def test_a_first_send_of_a_sent_issue_names_the_send_and_the_choices() -> None:
    refused = refusal(ISSUE, SendIntent.FIRST, [EARLIER], surface=Surface.CLI)
    assert isinstance(refused, IssueAlreadySent)
    text = str(refused)
    assert text.startswith("issue 51 (2021-12-20 .. 2021-12-26) already has 1 send(s)")
    assert (
        "send 11111111-2222-3333-4444-555555555555 (first), requested 2026-12-01 21:40 UTC, "
        "status done: 32 deliveries (2 failed, 30 sent)" in text
    )
    assert "add --only-new" in text
    assert "scripts pass --yes-resend 51" in text
    api = str(refusal(ISSUE, SendIntent.FIRST, [EARLIER], surface=Surface.API))
    assert '"intent": "resend_all" with "confirm_issue": 51' in api


def test_the_same_number_with_other_dates_is_pointed_out() -> None:
    other = IssueIdentity("issue-51", 51, date(2022, 1, 3), date(2022, 1, 9))
    text = str(refusal(other, SendIntent.FIRST, [EARLIER], surface=Surface.CLI))
    assert "that send had the dates 2021-12-20 .. 2021-12-26: if this is a new issue" in text


def test_follow_ups_need_an_earlier_send_and_a_resend_needs_the_number() -> None:
    assert refusal(ISSUE, SendIntent.FIRST, [], surface=Surface.CLI) is None
    assert isinstance(refusal(ISSUE, SendIntent.ONLY_NEW, [], surface=Surface.CLI), NotSentYet)
    assert refusal(ISSUE, SendIntent.ONLY_NEW, [EARLIER], surface=Surface.CLI) is None
    unconfirmed = refusal(ISSUE, SendIntent.RESEND_ALL, [EARLIER], surface=Surface.CLI)
    assert isinstance(unconfirmed, ResendNotConfirmed)
    wrong = refusal(ISSUE, SendIntent.RESEND_ALL, [EARLIER], surface=Surface.CLI, confirm_number=15)
    assert "51 expected, 15 given" in str(wrong)
    assert (
        refusal(ISSUE, SendIntent.RESEND_ALL, [EARLIER], surface=Surface.CLI, confirm_number=51)
        is None
    )
    assert refusal(ISSUE, SendIntent.TEST, [EARLIER], surface=Surface.CLI) is None


def test_choices_that_contradict_each_other_are_refused() -> None:
    assert intent_of(only_new=False, resend_all=False, test=False) == SendIntent.FIRST
    assert intent_of(only_new=True, resend_all=False, test=False) == SendIntent.ONLY_NEW
    assert intent_of(only_new=False, resend_all=True, test=False) == SendIntent.RESEND_ALL
    assert intent_of(only_new=False, resend_all=False, test=True) == SendIntent.TEST
    with pytest.raises(SendRefused):
        intent_of(only_new=True, resend_all=True, test=False)
    with pytest.raises(SendRefused):
        intent_of(only_new=True, resend_all=False, test=True)


def test_replies_group_without_addresses_and_queue_ids() -> None:
    one = reply_key(451, "4.7.1 <anna@example.org> greylisted, queue id 9F2A3B4C5D6E")
    two = reply_key(451, "4.7.1 <boris@example.org> greylisted, queue id 77AB12CD34EF")
    assert one == two == "451 4.7.1 <…@example.org> greylisted, queue id …"
    assert reply_key(None, "") == "no reply"
    assert reply_key(550, "550 5.1.1 unknown").startswith("550 5.1.1")


def _progress(status: str, counts: dict[str, dict[str, int]], **extra: object) -> SendProgress:
    return SendProgress(
        send_id="s-1",
        issue_key="issue-51",
        status=status,
        created_at=datetime(2026, 12, 1, 21, 40, tzinfo=UTC),
        finished_at=None,
        languages=[
            LanguageProgress(language=lang, counts=c, sent_in_window=c.get("sent", 0), window_s=30)
            for lang, c in counts.items()
        ],
        **extra,  # type: ignore[arg-type]
    )


def test_a_send_being_planned_says_so_instead_of_zeros() -> None:
    lines = progress_view.lines(_progress("planning", {"en": {}, "ru": {}}))
    assert lines[0] == "issue-51 send s-1: planning…, started 2026-12-01 21:40:00 UTC"
    assert lines[1:] == ["  planning… no deliveries written yet"]
    assert not any("total=0" in line for line in lines)


def test_status_lines_show_each_edition_and_the_top_reasons() -> None:
    progress = _progress(
        "running",
        {"en": {"sent": 60, "deferred": 30, "queued": 10}, "ru": {"sent": 9, "failed": 1}},
        reasons=[
            Reason("deferred", "451 4.7.1 slow down", 30, (("example.net", 30),)),
            Reason("failed", "554 5.7.1 refused by policy", 1, (("example.com", 1),)),
        ],
    )
    lines = progress_view.lines(progress)
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:5]}
    assert rows["en"] == ["100", "60", "30", "0", "0", "10", "60", "%", "2.0/s", "20", "s"]
    assert rows["ru"] == ["10", "9", "0", "1", "0", "0", "100", "%", "0.3/s", "-"]
    assert rows["all"][:6] == ["110", "69", "30", "1", "0", "10"]
    assert "  top deferral reasons:" in lines
    assert "        30x deferred 451 4.7.1 slow down  [example.net 30]" in lines
    assert "         1x failed   554 5.7.1 refused by policy  [example.com 1]" in lines


def test_a_test_send_says_it_is_one() -> None:
    progress = _progress("done", {"en": {"sent": 1}}, test_to="e***@example.org", intent="test")
    assert progress.is_test
    assert progress_view.header(progress).startswith(
        "issue-51 TEST send to e***@example.org (not counted with real sends) s-1: done"
    )
