"""A drill's own PostgreSQL database: created in the machine's server, seeded, dropped after.

The audience is ``N`` active subscribers ``reader<n>@example.{org,net,com,edu}`` across the
en/be/ru segments, with one ~30 KB edition per language carrying the per-recipient markers.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import asyncpg

from benchmarks import scratch
from shared.messaging import placeholders

ADMIN_URL = os.environ.get(
    "NEWSLETTER_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
LANGUAGES = ("en", "be", "ru")
# The drill's own connections carry this name, so that a fault never terminates them.
APPLICATION_NAME = "nl-bench-faults"
_PARAGRAPHS = {
    "en": "The council met on Tuesday and agreed the budget for the new library. ",
    "be": "Рада сабралася ў аўторак і зацвердзіла бюджэт новай бібліятэкі. ",
    "ru": "Совет собрался во вторник и утвердил бюджет новой библиотеки. ",
}


async def admin_connection(url: str = ADMIN_URL) -> asyncpg.Connection:
    return await asyncpg.connect(url, server_settings={"application_name": APPLICATION_NAME})


@contextlib.asynccontextmanager
async def own_database() -> AsyncIterator[tuple[str, str]]:
    """A fresh migrated database; yields (name, url) and drops it at the end."""
    async with scratch.named_database(
        ADMIN_URL, prefix="nlfaults", application_name=APPLICATION_NAME
    ) as (name, url):
        yield name, url


def _edition(language: str) -> tuple[str, str, str]:
    paragraph = _PARAGRAPHS[language] * 6
    html = (
        f'<!doctype html><html lang="{language}"><body>'
        + "".join(f"<h2>Item {i}</h2>\n<p>{paragraph}</p>\n" for i in range(30))
        + f'<p><a href="{placeholders.UNSUBSCRIBE_URL}">x</a> '
        f'<a href="{placeholders.PREFERENCES_URL}">y</a> {placeholders.RECIPIENT}</p></body></html>'
    )
    text = "\n\n".join(paragraph for _ in range(20)) + f"\n\n{placeholders.UNSUBSCRIBE_URL}\n"
    return f"Digest {language} 48", html, text


async def seed(url: str, *, recipients: int, send_id: str) -> set[str]:
    """Seed the audience and the editions; returns the audience's addresses."""
    conn = await asyncpg.connect(url, server_settings={"application_name": APPLICATION_NAME})
    try:
        await conn.execute(
            """
            INSERT INTO subscriber (email, email_hash, email_domain, status, locale,
                                    created_at, updated_at)
            SELECT 'reader' || g || '@' || d.domain, md5(g::text) || md5('x' || g::text),
                   d.domain, 'active', (ARRAY['en','be','ru'])[1 + g % 3], now(), now()
            FROM generate_series(1, $1::int) g
            CROSS JOIN LATERAL (SELECT (ARRAY['example.org','example.net','example.com',
                                              'example.edu'])[1 + g % 4] AS domain) d
            """,
            recipients,
        )
        await conn.execute(
            "INSERT INTO subscriber_language (subscriber_id, language) "
            "SELECT id, locale FROM subscriber"
        )
        for language in LANGUAGES:
            subject, html, text = _edition(language)
            await conn.execute(
                "INSERT INTO edition (send_id, issue_key, language, content_language, subject, "
                "preheader, html, text, render_ms, rendered_at) "
                "VALUES ($1, 'faults', $2, $2, $3, '', $4, $5, 0, now())",
                send_id,
                language,
                subject,
                html,
                text,
            )
        await conn.execute("ANALYZE")
        return {str(r["email"]) for r in await conn.fetch("SELECT email FROM subscriber")}
    finally:
        await conn.close()
