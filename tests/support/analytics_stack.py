"""The analytics tests' stack (issue 18): the renderer (tracked links, click counter, open
pixel) behind the subscription app as the public origin, the dispatcher delivering to a real
SMTP server over a socket, all on the test's own vhost and database and sharing one secret key
(as the processes of a deployment do: a link one signs, the others read).

Used by ``tests/integration/test_analytics_clicks.py``, ``test_analytics_opens.py`` and
``test_analytics_per_reader.py``::

    async with analytics_stack(vhost_url, database_url, tmp_path, **settings) as stack:
        mails = await stack.send_issue(sessions, number=number)
        answer = await stack.client.get(path)

The report page tests (``tests/integration/test_analytics_report_page.py``,
``tests/browser/test_report_page.py``) seed an issue's tracked links with :func:`save_articles`.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.renderer.click_store import save_tracked_links
from services.subscription.app import create_app
from services.subscription.policy import SignupPolicy
from shared.db.tables import TrackedLink
from shared.links import Links
from shared.messaging.schemas import RenderIssue
from shared.messaging.topology import RENDER_ISSUE
from shared.settings import Settings, load_settings
from shared.tokens import TokenSigner
from tests.integration.renderer_harness import running_renderer, sample_sources
from tests.support import dispatch_seed
from tests.support.database import sessions_on
from tests.support.ports import free_port
from tests.support.socket_app import on_socket
from tests.support.test_mta import ScriptedMta

SECRET = "analytics-secret-" + "a" * 32
ADMIN_TOKEN = "analytics-admin-" + "t" * 32
QUICK = SignupPolicy(signup_min_seconds=0.0, response_floor_s=0.0, ip_limit=1000)


@pytest.fixture(name="sessions")
async def database_sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """The ``sessions`` of an analytics test: on the test's ``database_url`` (PostgreSQL or
    SQLite), which the stack's processes use too. Import it into the test module."""
    async with sessions_on(database_url) as sessions:
        yield sessions


def issue_sources(number: int, *, extra: str = "") -> dict[str, str]:
    """The sample issue in en/be/ru as issue ``number``, each article body ending in ``extra``."""
    return {
        lang: text.replace("issue: 50\n", f"issue: {number}\n").rstrip("\n") + extra + "\n"
        for lang, text in sample_sources("en", "be", "ru").items()
    }


async def save_articles(
    sessions: async_sessionmaker[AsyncSession], *, issue: int, articles: Sequence[tuple[str, str]]
) -> None:
    """Issue ``issue``'s tracked links as the renderer stores them: one link per article, given
    as (key, title), in each of the en/be/ru editions, to ``https://example.net/{key}``."""
    await save_tracked_links(
        sessions,
        links=[
            TrackedLink(
                issue_number=issue,
                edition=edition,
                article=article,
                link=0,
                article_key=key,
                article_title=title,
                url=f"https://example.net/{key}",
            )
            for edition in ("en", "be", "ru")
            for article, (key, title) in enumerate(articles)
        ],
    )


def tracked_links(
    mail: EmailMessage, *, base: str, lang: str, with_ref: bool = False
) -> tuple[list[str], list[str]]:
    """The tracked links of a mail's HTML and plain parts, in order, each once.

    ``with_ref``: keep a per-delivery reference (``/{ref}`` after the token) when there is one.
    """
    html = mail.get_body(("html",))
    text = mail.get_body(("plain",))
    assert html is not None
    assert text is not None
    pattern = (
        re.escape(f"{base}/{lang}/r/")
        + r"[A-Za-z0-9_-]+"
        + (r"(?:/[A-Za-z0-9_-]+)?" if with_ref else "")
    )
    in_html = list(dict.fromkeys(re.findall(pattern, html.get_content())))
    in_text = list(dict.fromkeys(re.findall(pattern, text.get_content())))
    return in_html, in_text


@dataclass
class AnalyticsStack:
    base: str  # the public origin (the subscription app, forwarding to the renderer)
    settings: Settings
    mta: ScriptedMta
    client: httpx.AsyncClient  # on the public origin
    amqp_url: str
    last_send_id: str = ""

    @property
    def links(self) -> Links:
        """Signed links as the dispatcher puts them in mails (the stack's key)."""
        return Links(public_url=self.base, signer=TokenSigner(SECRET))

    @property
    def admin(self) -> dict[str, str]:
        return {"authorization": f"Bearer {ADMIN_TOKEN}"}

    async def send_issue(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        number: int,
        extra: str = "",
        tracking: bool = True,
        timeout: float = 120.0,
    ) -> dict[str, EmailMessage]:
        """Render and send issue ``number`` to every edition; the mails by recipient."""
        send_id = str(uuid.uuid4())
        await dispatch_seed.publish(
            self.amqp_url,
            RenderIssue(
                send_id=send_id,
                issue_key=f"issue-{number}",
                sources=issue_sources(number, extra=extra),
                segments=["en", "be", "ru"],
                tracking=tracking,
            ),
            routing_key=RENDER_ISSUE,
        )
        await dispatch_seed.wait_for_send(sessions, send_id, timeout=timeout)
        self.last_send_id = send_id
        return {a.rcpt: a.parsed() for a in self.mta.handler.accepted}


@contextlib.asynccontextmanager
async def analytics_stack(
    amqp_url: str, database_url: str, tmp_path: Path, **overrides: object
) -> AsyncIterator[AnalyticsStack]:
    """The whole stack; ``overrides`` are settings of every process (``open_tracking``,
    ``per_reader_analytics``, ``click_burst_window_s``, ...).

    Clicks are flushed every 0.2 s; the default burst window is long (two minutes) so that no
    assertion depends on how fast this machine answers, and the counter counts the clicks it
    holds when the renderer stops (when this context ends).
    """
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    values: dict[str, object] = {
        "mode": "test",
        "amqp_url": amqp_url,
        "database_url": database_url,
        "var_dir": tmp_path,
        "public_url": base,
        "secret_key": SECRET,
        "admin_token": ADMIN_TOKEN,
        "click_flush_s": 0.2,
        "click_burst_window_s": 120.0,
        **overrides,
    }
    settings = load_settings(**values)  # type: ignore[arg-type]
    with ScriptedMta() as mta:
        dispatcher = dispatch_seed.make_settings(
            amqp_url=amqp_url,
            database_url=database_url,
            smtp_url=mta.url,
            tmp_path=tmp_path,
            secret_key=SECRET,
            public_url=base,
            **{k: v for k, v in overrides.items() if k == "per_reader_analytics"},
        )
        async with running_renderer(settings, tmp_path) as renderer:
            public = settings.model_copy(
                update={"renderer_probe_port": renderer.settings.renderer_probe_port}
            )
            async with (
                on_socket(create_app(public, policy=QUICK), port=port),
                dispatch_seed.RunningDispatcher(dispatcher),
                httpx.AsyncClient(base_url=base, timeout=15.0) as client,
            ):
                yield AnalyticsStack(
                    base=base, settings=settings, mta=mta, client=client, amqp_url=amqp_url
                )
