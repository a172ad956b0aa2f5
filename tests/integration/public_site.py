"""The public site as readers reach it: the subscription app on a socket (the public origin)
forwarding the archive's paths to the renderer's internal port, both on this test's vhost and
database, with issues rendered by the renderer's real consumer."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from services.subscription.app import create_app
from services.subscription.policy import SignupPolicy
from shared.messaging.publisher import Publisher
from shared.messaging.schemas import RenderIssue, SendIntentName
from shared.messaging.topology import DISPATCHER_PLANNER, RENDER_ISSUE
from shared.settings import load_settings
from tests.integration.renderer_harness import (
    RunningRenderer,
    running_renderer,
    sample_sources,
    take,
)
from tests.support.ports import free_port
from tests.support.socket_app import on_socket

SECRET = "public-site-secret-" + "s" * 32
SAMPLE_DATES = "dates: 2021-12-13 .. 2021-12-19"


@dataclass
class PublicSite:
    base: str  # the public origin (the subscription app)
    renderer: RunningRenderer
    sends: dict[str, str] = field(default_factory=dict)  # the test's own names for its sends

    @property
    def renderer_port(self) -> int:
        return self.renderer.settings.renderer_probe_port

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base, timeout=15.0)

    async def send(
        self,
        number: int,
        dates: str,
        *,
        languages: tuple[str, ...] = ("en", "be", "ru"),
        test_to: str | None = None,
        intent: SendIntentName = "first",
    ) -> str:
        """Render issue ``number`` of ``dates`` ("2021-12-20 .. 2021-12-26") and wait for it."""
        sources = {
            lang: text.replace("issue: 50\n", f"issue: {number}\n").replace(
                SAMPLE_DATES, f"dates: {dates}"
            )
            for lang, text in sample_sources(*languages).items()
        }
        command = RenderIssue(
            send_id=str(uuid.uuid4()),
            issue_key=f"issue-{number}",
            sources=sources,
            segments=list(languages),
            test_to=test_to,
            intent=intent,
        )
        connection = self.renderer.connection
        publisher = await Publisher.open(connection)
        await publisher.publish(command, routing_key=RENDER_ISSUE)
        await publisher.close()
        found = await take(
            connection,
            DISPATCHER_PLANNER.name,
            lambda m: json.loads(m.body).get("send_id") == command.send_id,
        )
        assert found, f"issue {number} was not rendered"
        return command.send_id


@contextlib.asynccontextmanager
async def running_public_site(
    amqp_url: str, database_url: str, tmp_path: Path
) -> AsyncIterator[PublicSite]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = load_settings(
        mode="test",
        amqp_url=amqp_url,
        database_url=database_url,
        var_dir=tmp_path,
        public_url=base,
        secret_key=SECRET,
        admin_token="public-site-admin",
    )
    async with running_renderer(settings, tmp_path) as renderer:
        public = settings.model_copy(
            update={"renderer_probe_port": renderer.settings.renderer_probe_port}
        )
        policy = SignupPolicy(signup_min_seconds=0.0, response_floor_s=0.0, ip_limit=100)
        async with on_socket(create_app(public, policy=policy), port=port):
            yield PublicSite(base=base, renderer=renderer)
