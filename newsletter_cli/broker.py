"""Finding a RabbitMQ for local runs: reach the configured one, else start a local server."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import aio_pika


class BrokerUnavailable(RuntimeError):
    """No RabbitMQ could be reached or started; the message says how to get one."""


HOW_TO_GET_ONE = (
    "RabbitMQ is not reachable at {url}. Install and start one, e.g. on Debian/Ubuntu "
    "`sudo apt-get install rabbitmq-server && sudo rabbitmq-server -detached`, or with a "
    "container engine `docker run -d -p 5672:5672 rabbitmq:3-management`, or point "
    "NEWSLETTER_AMQP_URL at one."
)


async def reachable(url: str, *, timeout: float = 3.0) -> bool:
    try:
        connection = await aio_pika.connect(url, timeout=timeout)
    except (OSError, TimeoutError, aio_pika.exceptions.AMQPError):
        return False
    await connection.close()
    return True


async def ensure_broker(
    url: str, *, say: Callable[[str], object] = print, wait_s: float = 90.0
) -> None:
    """Return once ``url`` answers; start a locally installed ``rabbitmq-server`` if needed."""
    if await reachable(url):
        return
    server = _tool("rabbitmq-server")
    host = urlsplit(url).hostname or ""
    if server is None or host not in {"127.0.0.1", "localhost", "::1"}:
        raise BrokerUnavailable(HOW_TO_GET_ONE.format(url=_safe(url)))
    say(f"RabbitMQ is down; starting the local server ({server} -detached)")
    await asyncio.to_thread(
        subprocess.run, [server, "-detached"], check=False, capture_output=True, timeout=60
    )
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if await reachable(url):
            return
        await asyncio.sleep(1.0)
    raise BrokerUnavailable(HOW_TO_GET_ONE.format(url=_safe(url)))


def private_vhost_url(url: str, name: str = "newsletter-demo") -> str:
    """A vhost of our own when ``rabbitmqctl`` is at hand (local broker), else ``url`` as is.

    The demo starts from an empty database each time; its own vhost keeps old jobs of an
    earlier run, or anybody else's messages, away from it.
    """
    ctl = _tool("rabbitmqctl")
    parts = urlsplit(url)
    if parts.hostname not in {"127.0.0.1", "localhost", "::1"} or ctl is None:
        return url
    vhost = f"{name}-{uuid.uuid4().hex[:6]}"
    user = parts.username or "guest"
    for args in (["add_vhost", vhost], ["set_permissions", "-p", vhost, user, ".*", ".*", ".*"]):
        command = [ctl, "-q", *args]
        done = subprocess.run(command, check=False, capture_output=True, timeout=60)  # noqa: S603
        if done.returncode != 0:
            return url
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(vhost, safe=""), "", ""))


def drop_vhost(url: str) -> None:
    vhost = urlsplit(url).path.lstrip("/")
    ctl = _tool("rabbitmqctl")
    if ctl is not None and vhost.startswith("newsletter-demo-"):
        subprocess.run(  # noqa: S603
            [ctl, "-q", "delete_vhost", unquote(vhost)],
            check=False,
            capture_output=True,
            timeout=60,
        )


def _safe(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _tool(name: str) -> str | None:
    """A RabbitMQ tool on PATH or in /usr/sbin (Debian puts them there, off a user's PATH)."""
    found = shutil.which(name)
    if found:
        return found
    candidate = f"/usr/sbin/{name}"
    return candidate if os.path.exists(candidate) else None
