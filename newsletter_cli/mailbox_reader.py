"""Reading what the SMTP sink stored: the demo's and the end-to-end test's view of an inbox."""

from __future__ import annotations

import mailbox
import re
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

_URL = re.compile(r"https?://[^\s<>\"')\]]+")


@dataclass(frozen=True)
class StoredMail:
    path: Path
    recipient: str
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"] or "")

    @property
    def language(self) -> str:
        return str(self.message["Content-Language"] or "")

    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        return "" if part is None else str(part.get_content())

    def html(self) -> str:
        part = self.message.get_body(preferencelist=("html",))
        return "" if part is None else str(part.get_content())

    def links(self, containing: str) -> list[str]:
        return [url for url in _URL.findall(self.text()) if containing in url]


def read_maildir(path: Path) -> list[StoredMail]:
    """Every message in the Maildir, oldest first, with the envelope recipient from the sink."""
    if not path.exists():
        return []
    box = mailbox.Maildir(path, create=False)
    found: list[StoredMail] = []
    for key in box.iterkeys():
        file = _message_path(path, key)
        raw = file.read_bytes()
        message: EmailMessage = message_from_bytes(raw, policy=policy.default)
        recipient = str(message.get("X-Sink-Rcpt-To", message.get("To", "")))
        found.append(StoredMail(path=file, recipient=recipient, message=message))
    return sorted(found, key=lambda mail: mail.path.stat().st_mtime_ns)


def _message_path(root: Path, key: str) -> Path:
    for sub in ("new", "cur"):
        for candidate in (root / sub).glob(f"{key}*"):
            return candidate
    raise FileNotFoundError(key)
