"""The per-address limit holds across service processes: one confirmation mail per address
per interval, whichever process takes each signup.

Two separate service processes (each ``python -m services.subscription``, each on its own
port, one database and one vhost, as two replicas or two workers are) get the same new address
at once, alternately, then again once all are answered. The limit is a conditional write in
the database (the INSERT with the slot taken, or the UPDATE that claims it), so the two
together store one subscriber and queue one confirmation command. In-process limits would
let each process mail once.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from benchmarks.signups import _form_fields, _start_service
from shared.db.engine import create_engine
from shared.db.migrate import upgrade
from shared.messaging.topology import RENDERER_TRANSACTIONAL, connect
from tests.integration.test_subscription_workers_ip_limit import _until_ready
from tests.support.ports import free_port

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


async def _queued_commands(amqp_url: str) -> int:
    connection = await connect(amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(RENDERER_TRANSACTIONAL.name, passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await connection.close()


async def _stored(database_url: str, email: str) -> int:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            query = text("SELECT count(*) FROM subscriber WHERE email = :email")
            return int((await connection.execute(query, {"email": email})).scalar_one())
    finally:
        await engine.dispose()


def _logs(directory: Path) -> str:
    """The tails of the services' logs, for a failure message."""
    return "\n".join(
        f"--- {log.name}:\n{log.read_text(errors='replace')[-1500:]}"
        for log in sorted(directory.glob("service-*.log"))
    )


async def test_two_processes_mail_an_address_once(
    postgres_url: str, vhost_url: str, tmp_path: Path
) -> None:
    await asyncio.to_thread(upgrade, postgres_url)
    secret = secrets.token_urlsafe(48)  # one deployment: both processes sign with one key
    ports = [free_port(), free_port()]
    processes: list[subprocess.Popen[bytes]] = []
    for n, port in enumerate(ports):
        env = {
            **os.environ,
            "NEWSLETTER_MODE": "demo",
            "NEWSLETTER_SECRET_KEY": secret,
            "NEWSLETTER_DATABASE_URL": postgres_url,
            "NEWSLETTER_AMQP_URL": vhost_url,
            "NEWSLETTER_SUBSCRIPTION_PORT": str(port),
            "NEWSLETTER_PUBLIC_URL": f"http://127.0.0.1:{ports[0]}",
            "NEWSLETTER_IP_LIMIT": "0",
            "NEWSLETTER_SIGNUP_MIN_SECONDS": "0",
            "NEWSLETTER_RESPONSE_FLOOR_S": "0",
            "NEWSLETTER_LOG_LEVEL": "WARNING",
        }
        processes.append(_start_service(env, tmp_path / f"service-{n}.log"))
    try:
        clients = [
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) for port in ports
        ]
        for client, process in zip(clients, processes, strict=True):
            try:
                await _until_ready(client, process)
            except AssertionError as err:
                raise AssertionError(f"{err}\n{_logs(tmp_path)}") from err
        fields = await _form_fields(clients[0])  # the form of one, posted to both
        for client in clients[1:]:
            client.cookies = clients[0].cookies
        email = f"twice-{secrets.token_hex(6)}@example.org"
        post = {**fields, "email": email, "languages": "en"}

        async def sign_up(n: int) -> int:
            answer = await clients[n % 2].post("/subscribe", data=post)
            return answer.status_code

        codes = await asyncio.gather(*(sign_up(n) for n in range(12)))
        codes += [await sign_up(n) for n in range(4)]  # and again, one after the other
        assert codes == [200] * 16, f"{codes}\n{_logs(tmp_path)}"
        assert await _stored(postgres_url, email) == 1, _logs(tmp_path)
        commands = await _queued_commands(vhost_url)
        assert commands == 1, f"{commands} confirmation commands queued\n{_logs(tmp_path)}"
        for client in clients:
            await client.aclose()
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
