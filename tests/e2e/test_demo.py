"""End to end: `newsletter demo` runs the whole path through separate service processes.

Signup form -> RabbitMQ -> renderer -> dispatcher -> SMTP (the built-in Maildir sink), then a
weekly send of the sample issue; every mail is checked as a reader's client would see it.
"""

from __future__ import annotations

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
    assert "every mail parses without defects" in done.stdout
