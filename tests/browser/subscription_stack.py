"""The subscription app on a real socket with the real renderer and dispatcher beside it.

All three run in the test's process (``create_app`` under uvicorn, the renderer's and the
dispatcher's ``service.run``) on one database and a private RabbitMQ vhost, delivering to the
aiosmtpd sink; the browser tests read the mails from the sink's Maildir and follow their links.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from newsletter_cli.mailbox_reader import StoredMail, read_maildir
from newsletter_cli.smtp_sink import SmtpSink
from services.dispatcher import service as dispatcher_service
from services.renderer import service as renderer_service
from services.subscription.app import create_app
from services.subscription.policy import SignupPolicy
from shared.settings import Settings, load_settings
from tests.support.ports import free_port
from tests.support.socket_app import on_socket

# No time trap and no response floor: the pages answer at once (the journey test sets its own).
QUICK = SignupPolicy(signup_min_seconds=0.0, response_floor_s=0.0, ip_limit=100)


@dataclass(frozen=True)
class SubscriptionStack:
    base: str  # the app's URL, also its public URL (the links in the mails point here)
    settings: Settings
    maildir: Path

    async def mail_for(self, email: str, containing: str, timeout: float = 90) -> StoredMail:
        """The first mail to ``email`` with a link containing ``containing``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for mail in read_maildir(self.maildir):
                if email in mail.recipient and mail.links(containing):
                    return mail
            await asyncio.sleep(0.2)
        raise AssertionError(f"no mail to {email} with a {containing} link within {timeout}s")


@contextlib.asynccontextmanager
async def _renderer_and_dispatcher(settings: Settings) -> AsyncIterator[None]:
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(renderer_service.run(settings, stop=stop)),
        asyncio.create_task(dispatcher_service.run(settings, stop=stop)),
    ]
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks)


@contextlib.asynccontextmanager
async def subscription_stack(
    *,
    amqp_url: str,
    database_url: str,
    smtp_sink: SmtpSink,
    tmp_path: Path,
    secret_key: str,
    policy: SignupPolicy = QUICK,
    per_reader_analytics: bool = False,
) -> AsyncIterator[SubscriptionStack]:
    """Start the three services; ``smtp_sink`` must keep a Maildir (the ``smtp_sink`` fixture)."""
    maildir = smtp_sink.handler.maildir
    assert isinstance(maildir, Path), "the browser tests read the mails from the sink's Maildir"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = load_settings(
        mode="test",
        amqp_url=amqp_url,
        database_url=database_url,
        var_dir=tmp_path,
        public_url=base,
        secret_key=secret_key,
        admin_token="browser-admin",
        smtp_url=smtp_sink.url,
        renderer_probe_port=free_port(),
        dispatcher_probe_port=free_port(),
        per_reader_analytics=per_reader_analytics,
    )
    async with (
        on_socket(create_app(settings, policy=policy), port=port),
        _renderer_and_dispatcher(settings),
    ):
        yield SubscriptionStack(base=base, settings=settings, maildir=maildir)
