"""The ops read model's pure parts: masking addresses in SMTP replies, progress figures."""

from __future__ import annotations

from services.subscription.ops.read_models import Reputation, mask_addresses
from shared.send_progress import LanguageProgress


def test_addresses_in_smtp_replies_are_masked() -> None:
    reply = "5.1.1 <alice.smith@example.org>: Recipient address rejected; also bob@mail.example.com"
    masked = mask_addresses(reply)
    assert "alice.smith@example.org" not in masked
    assert "bob@mail.example.com" not in masked
    assert masked.startswith("5.1.1 <")
    assert "Recipient address rejected" in masked


def test_progress_counts_terminal_states_as_done() -> None:
    progress = LanguageProgress(
        language="be", counts={"sent": 6, "bounced": 1, "queued": 2, "deferred": 1}
    )
    assert progress.total == 10
    assert progress.done == 7
    assert progress.as_dict()["percent"] == 70.0
    assert LanguageProgress(language="ru").percent == 100.0, "nothing to send is complete"


def test_rates_are_relative_to_mail_sent() -> None:
    rep = Reputation(
        window_hours=24, sent=2000, by_class={"hard": 30, "complaint": 1, "soft": 9}, top_domains=[]
    )
    assert rep.hard_bounce_rate == 0.015
    assert rep.complaint_rate == 0.0005
    assert (
        Reputation(window_hours=24, sent=0, by_class={"hard": 1}, top_domains=[]).hard_bounce_rate
        == 0
    )


def test_time_left_follows_the_recent_rate() -> None:
    moving = LanguageProgress(
        language="en", counts={"sent": 600, "queued": 300}, sent_in_window=600
    )
    assert moving.rate_per_min == 120.0
    assert moving.eta_s == 150.0
    stalled = LanguageProgress(language="be", counts={"queued": 10})
    assert stalled.eta_s is None
    finished = LanguageProgress(language="ru", counts={"sent": 3})
    assert finished.eta_s == 0.0
