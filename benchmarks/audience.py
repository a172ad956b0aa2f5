"""The audience and editions every send benchmark seeds (``bench dispatch``, ``bench faults``).

``N`` active subscribers ``reader<n>@example.{org,net,com,edu}`` across the en/be/ru segments,
and one ~30 KB edition per language carrying the per-recipient markers of
``shared.messaging.placeholders``, written straight into the tables the planner reads.
"""

from __future__ import annotations

import asyncpg

from shared.messaging import placeholders

LANGUAGES = ("en", "be", "ru")
DOMAINS = ("example.org", "example.net", "example.com", "example.edu")
_PARAGRAPHS = {
    "en": "The council met on Tuesday and agreed the budget for the new library. ",
    "be": "Рада сабралася ў аўторак і зацвердзіла бюджэт новай бібліятэкі. ",
    "ru": "Совет собрался во вторник и утвердил бюджет новой библиотеки. ",
}


def edition(language: str) -> tuple[str, str, str]:
    """Subject, html and text of a ~30 KB edition with the per-recipient markers."""
    paragraph = _PARAGRAPHS[language] * 6
    html = (
        f'<!doctype html><html lang="{language}"><body>'
        + "".join(
            f'<h2 style="font-family:Georgia">Item {i}</h2>\n<p>{paragraph}</p>\n'
            for i in range(30)
        )
        + f'<p><a href="{placeholders.UNSUBSCRIBE_URL}">x</a> '
        f'<a href="{placeholders.PREFERENCES_URL}">y</a> {placeholders.RECIPIENT}</p></body></html>'
    )
    text = "\n\n".join(paragraph for _ in range(20)) + f"\n\n{placeholders.UNSUBSCRIBE_URL}\n"
    return f"Digest {language} — №48", html, text


async def seed(
    url: str,
    *,
    recipients: int,
    send_id: str,
    issue_key: str,
    application_name: str | None = None,
) -> set[str]:
    """Seed the audience and the send's editions into the database at ``url``; returns the
    audience's addresses."""
    settings = {"application_name": application_name} if application_name else None
    conn = await asyncpg.connect(url, server_settings=settings)
    try:
        await conn.execute(
            """
            INSERT INTO subscriber (email, email_hash, email_domain, status, locale,
                                    created_at, updated_at)
            SELECT 'reader' || g || '@' || d.domain, md5(g::text) || md5('x' || g::text),
                   d.domain, 'active', ($2::text[])[1 + g % 3], now(), now()
            FROM generate_series(1, $1::int) g
            CROSS JOIN LATERAL (SELECT ($3::text[])[1 + g % 4] AS domain) d
            """,
            recipients,
            list(LANGUAGES),
            list(DOMAINS),
        )
        await conn.execute(
            "INSERT INTO subscriber_language (subscriber_id, language) "
            "SELECT id, locale FROM subscriber"
        )
        for language in LANGUAGES:
            subject, html, text = edition(language)
            await conn.execute(
                "INSERT INTO edition (send_id, issue_key, language, content_language, subject, "
                "preheader, html, text, render_ms, rendered_at) "
                "VALUES ($1, $2, $3, $3, $4, '', $5, $6, 0, now())",
                send_id,
                issue_key,
                language,
                subject,
                html,
                text,
            )
        await conn.execute("ANALYZE")
        return {str(r["email"]) for r in await conn.fetch("SELECT email FROM subscriber")}
    finally:
        await conn.close()
