"""CSV export of subscribers, safe to open in a spreadsheet.

A cell that starts with ``=``, ``+``, ``-``, ``@``, tab or carriage return is read as a
formula by Excel, LibreOffice and Google Sheets (``=cmd|'/c calc'!A0@example.org``). Such
cells get a leading single quote, as the OWASP "CSV Injection" guidance recommends; the
quote shows the cell as text and is not part of the address a person reads.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator

from services.subscription.directory import SubscriberPublic

COLUMNS = ["id", "email", "status", "locale", "languages", "created_at", "confirmed_at"]
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_CHUNK_CHARS = 64_000


def spreadsheet_safe(cell: str) -> str:
    """The cell as text a spreadsheet will not evaluate."""
    return "'" + cell if cell.startswith(FORMULA_PREFIXES) else cell


def _cells(row: SubscriberPublic) -> list[str]:
    return [
        str(row.id),
        row.email,
        row.status,
        row.locale,
        " ".join(row.languages),
        row.created_at.isoformat(),
        row.confirmed_at.isoformat() if row.confirmed_at else "",
    ]


async def csv_lines(rows: AsyncIterator[SubscriberPublic]) -> AsyncIterator[str]:
    """The export in chunks of about 64 KB, header first."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    async for row in rows:
        writer.writerow([spreadsheet_safe(cell) for cell in _cells(row)])
        if buffer.tell() > _CHUNK_CHARS:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
