"""Isolated resources on the real local servers, so test runs never see each other's data.

Each test session gets its own RabbitMQ virtual host and its own PostgreSQL database, both
removed at the end; a test that needs a vhost of its own gets a fresh one. Tests never use the
default vhost or the ``test`` database directly. Databases and the rabbitmqctl call are
:mod:`benchmarks.scratch` (the benchmarks' helper too); vhosts are made in batches here, which
only a test run needs.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import subprocess
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

from aio_pika.abc import AbstractChannel

from benchmarks import scratch
from benchmarks.scratch import rabbitmqctl, unique_name
from shared.messaging.topology import connect, declare_topology

T = TypeVar("T")

RABBIT_BASE_URL = os.environ.get("NEWSLETTER_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
POSTGRES_ADMIN_URL = os.environ.get(
    "NEWSLETTER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


PREFIX = "nltest"

__all__ = [
    "POSTGRES_ADMIN_URL",
    "RABBIT_BASE_URL",
    "create_database",
    "create_vhost",
    "declared_vhost",
    "delete_vhost",
    "drop_database",
    "off_thread",
    "rabbitmqctl",
    "unique_name",
    "urlsplit",
    "urlunsplit",
]


# Every rabbitmqctl call starts an Erlang VM: about 1.5 s here under load, and a vhost took
# three (add, permissions, delete) for each of about a hundred tests. Vhosts are therefore
# made eight at a time in one ``rabbitmqctl eval`` and deleted eight at a time, after their
# tests. Each is still fresh and used by one test only; the batch is only about the calls.
_BATCH = 8
_ACTING_USER = "newsletter-tests"
_lock = threading.Lock()
_stock: list[str] = []  # created, not yet handed out
_spent: list[str] = []  # handed out and given back, not yet deleted


def _erlang_binaries(names: list[str]) -> str:
    return "[" + ", ".join(f'<<"{name}">>' for name in names) + "]"


def _add_vhosts(names: list[str], user: str) -> None:
    try:
        rabbitmqctl(
            "eval",
            "lists:foreach(fun(V) -> "
            f'ok = rabbit_vhost:add(V, <<"{_ACTING_USER}">>), '
            f'ok = rabbit_auth_backend_internal:set_permissions(<<"{user}">>, V, '
            f'<<".*">>, <<".*">>, <<".*">>, <<"{_ACTING_USER}">>) '
            f"end, {_erlang_binaries(names)}), ok.",
        )
    except subprocess.CalledProcessError:  # another broker version: the documented commands
        for name in names:
            rabbitmqctl("add_vhost", name)
            rabbitmqctl("set_permissions", "-p", name, user, ".*", ".*", ".*")


def _delete_vhosts(names: list[str]) -> None:
    if not names:
        return
    try:
        rabbitmqctl(
            "eval",
            f'lists:foreach(fun(V) -> rabbit_vhost:delete(V, <<"{_ACTING_USER}">>) end, '
            f"{_erlang_binaries(names)}), ok.",
        )
    except subprocess.CalledProcessError:
        for name in names:
            rabbitmqctl("delete_vhost", name)


def create_vhost() -> tuple[str, str]:
    """A fresh vhost with full permissions for the test user, for one caller only; returns
    (name, url). Give it back with :func:`delete_vhost`."""
    user = urlsplit(RABBIT_BASE_URL).username or "guest"
    with _lock:
        if not _stock:
            batch = [unique_name(PREFIX) for _ in range(_BATCH)]
            _add_vhosts(batch, user)
            _stock.extend(batch)
        name = _stock.pop()
    parts = urlsplit(RABBIT_BASE_URL)
    return name, urlunsplit((parts.scheme, parts.netloc, "/" + quote(name, safe=""), "", ""))


def off_thread(function: Callable[..., T], *args: object) -> T:
    """Run set-up that owns an event loop (Alembic's env, asyncio.run) on a thread of its own,
    so that it never replaces the loop pytest-asyncio set for this thread."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(function, *args).result()


def declared_vhost(
    prepare: Callable[[AbstractChannel], Awaitable[None]] | None = None,
) -> tuple[str, str]:
    """A fresh vhost, as :func:`create_vhost`, with the suite's topology declared in it; then
    ``prepare`` on the same channel (the messages a module's tests expect to find there). If
    either fails, the vhost is given back before the error is raised."""
    name, url = create_vhost()

    async def declare() -> None:
        connection = await connect(url)
        try:
            channel = await connection.channel()
            await declare_topology(channel)
            if prepare is not None:
                await prepare(channel)
        finally:
            await connection.close()

    try:
        off_thread(asyncio.run, declare())
    except BaseException:
        delete_vhost(name)
        raise
    return name, url


def delete_vhost(name: str) -> None:
    """Delete a vhost from :func:`create_vhost`: with the next few given back, or at
    :func:`delete_leftover_vhosts`. Nothing connects to it any more meanwhile."""
    with _lock:
        _spent.append(name)
        if len(_spent) < _BATCH:
            return
        batch = _spent[:]
        _spent.clear()
    _delete_vhosts(batch)


@atexit.register
def delete_leftover_vhosts() -> None:
    """Delete the vhosts given back but not yet deleted, and those never handed out."""
    with _lock:
        batch = _spent + _stock
        _spent.clear()
        _stock.clear()
    _delete_vhosts(batch)


async def create_database() -> tuple[str, str]:
    """Create a fresh, empty PostgreSQL database; returns (name, url)."""
    return await scratch.create_database(POSTGRES_ADMIN_URL, prefix=PREFIX)


async def drop_database(name: str) -> None:
    await scratch.drop_database(name, POSTGRES_ADMIN_URL)
