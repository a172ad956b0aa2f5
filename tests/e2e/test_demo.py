"""End to end: `newsletter demo` runs the whole path through separate service processes.

Signup form -> RabbitMQ -> renderer -> dispatcher -> SMTP (the built-in Maildir sink), then a
weekly send of the sample issue (a reader of two editions gets both) and the same send again,
refused; every mail is checked as a reader's client would see it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from newsletter_cli.mail_checks import kind_of, problems_of
from newsletter_cli.mailbox_reader import read_maildir

pytestmark = pytest.mark.e2e

READERS = {
    "en": "reader.en@example.org",
    "be": "chytach.be@example.org",
    "ru": "chitatel.ru@example.org",
}


def test_demo_delivers_a_confirmation_and_an_issue_to_each_reader_in_their_language(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "newsletter_cli.main",
            "demo",
            "--var-dir",
            str(tmp_path),
            "--timeout",
            "120",
        ],
        capture_output=True,
        text=True,
        timeout=280,
        env={k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")},
        check=False,
    )
    logs = "\n".join(
        f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
        for log in sorted((tmp_path / "logs").glob("*.log"))
    )
    assert done.returncode == 0, f"demo failed:\n{done.stdout}\n{done.stderr}\n{logs}"
    mails = read_maildir(tmp_path / "mail")
    for language, address in READERS.items():
        own = [mail for mail in mails if address in mail.recipient]
        confirmations = [m for m in own if kind_of(m) == "confirmation"]
        issues = [m for m in own if kind_of(m) == "issue"]
        assert len(confirmations) == 1, f"{language}: {len(confirmations)} confirmation mails"
        assert confirmations[0].links("/confirm?token="), f"{language}: no confirm link"
        assert len(issues) == 1, f"{language}: {len(issues)} issue mails"
        assert len(own) == 2, f"{language}: {[kind_of(m) for m in own]} (the demo sends no welcome)"
        for mail in own:
            assert problems_of(mail, language) == [], f"{mail.path}: {problems_of(mail, language)}"
    # The reader who ticked two editions gets each of them, one mail per edition.
    both = [m for m in mails if "reader.en-ru@example.org" in m.recipient]
    assert sorted(m.language for m in both if kind_of(m) == "issue") == ["en", "ru"]
    assert [kind_of(m) for m in both].count("confirmation") == 1
    for mail in (m for m in both if kind_of(m) == "issue"):
        assert problems_of(mail, mail.language) == [], (
            f"{mail.path}: {problems_of(mail, mail.language)}"
        )
    assert len(mails) == 4 + 5, "4 confirmations, 5 issue mails: the refused resend sent none"
    assert "the same `issue send` again is refused, no mail sent" in done.stdout
    assert "issue mails per edition: en 2, be 1, ru 2" in done.stdout
    assert "every mail parses without defects" in done.stdout
    # Each reader followed the tracked article link of each issue mail (issue 18).
    report = subprocess.run(
        [sys.executable, "-m", "newsletter_cli.main", "report", "issue", "50", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")},
            "NEWSLETTER_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}",
        },
        check=True,
    )
    figures = json.loads(report.stdout)
    [article] = figures["articles"]
    assert article["key"] == "minsk-escalation"
    assert article["clicks"] == {"en": 2, "be": 1, "ru": 2}, figures
    assert article["filtered"]["en"] == {"scanner": 2, "head": 2}, "machines are not readers"
    editions = {e["edition"]: e for e in figures["per_edition"]}
    assert {e: editions[e]["delivered"] for e in ("en", "be", "ru")} == {"en": 2, "be": 1, "ru": 2}
    assert article["share"] == {"en": 1.0, "be": 1.0, "ru": 1.0}
    assert "clicks of issue 50, aggregate" in done.stdout
