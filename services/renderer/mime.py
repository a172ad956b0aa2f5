"""A complete message as it would be sent, for previews and the preflight's defect check.

The dispatcher builds its own MIME bytes from stored editions; this is the renderer's view of the
same mail: ``multipart/alternative`` (text, then HTML), UTF-8, 8bit when every line fits SMTP's
limit (quoted-printable would swell Cyrillic text by more than half), ``Content-Language``,
and an RFC 8058 one-click ``List-Unsubscribe``.

``List-Unsubscribe`` is written into the bytes directly: a signed URL is longer than a folded
header line, and the ``email`` package would RFC 2047-encode it, which no mailbox provider reads.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

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
) -> bytes:
    """The message's bytes (CRLF line endings)."""
    message = EmailMessage(policy=SMTP)
    message.set_content(text, subtype="plain", charset="utf-8", cte=transfer_encoding(text))
    message.add_alternative(html, subtype="html", charset="utf-8", cte=transfer_encoding(html))
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(date or datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain=sender.domain)
    message["Content-Language"] = language
    if list_id:
        message["List-Id"] = f"<{list_id}>"
    data = message.as_bytes()
    if list_unsubscribe_url:
        if any(c in list_unsubscribe_url for c in "\r\n<>") or not list_unsubscribe_url.isascii():
            raise ValueError("unsafe List-Unsubscribe URL")
        head, sep, body = data.partition(b"\r\n\r\n")
        extra = (
            f"List-Unsubscribe: <{list_unsubscribe_url}>\r\n"
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click"
        ).encode("ascii")
        data = head + b"\r\n" + extra + sep + body
    return data
