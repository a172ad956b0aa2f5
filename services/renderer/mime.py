"""A complete message as it would be sent, for previews and the preflight's defect check.

The dispatcher builds its own MIME bytes from stored editions; this is the renderer's view of the
same mail: ``multipart/alternative`` (text, then HTML), UTF-8, 8bit when every line fits SMTP's
limit (quoted-printable would swell Cyrillic text by more than half), with ``Content-Language``
and an RFC 8058 one-click ``List-Unsubscribe``.
"""

from __future__ import annotations

from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from datetime import UTC, datetime

from services.renderer.lines import SMTP_LINE_LIMIT, longest_line


def transfer_encoding(text: str) -> str:
    return "8bit" if longest_line(text) < SMTP_LINE_LIMIT - 2 else "quoted-printable"


def build_message(
    *,
    sender: Address,
    to: str,
    subject: str,
    html: str,
    text: str,
    language: str,
    list_unsubscribe_url: str | None = None,
    list_id: str | None = None,
    date: datetime | None = None,
) -> EmailMessage:
    message = EmailMessage(policy=SMTP)
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(date or datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain=sender.domain)
    message["Content-Language"] = language
    if list_id:
        message["List-Id"] = f"<{list_id}>"
    if list_unsubscribe_url:
        message["List-Unsubscribe"] = f"<{list_unsubscribe_url}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(text, subtype="plain", charset="utf-8", cte=transfer_encoding(text))
    message.add_alternative(html, subtype="html", charset="utf-8", cte=transfer_encoding(html))
    return message
