"""Fixtures for the real servers: a RabbitMQ vhost, PostgreSQL and SQLite databases, an SMTP sink.

Integration tests take ``amqp_url``, ``postgres_url``, ``sqlite_url`` or ``database_url``
(parametrized over both engines) and ``smtp_sink``; nothing here is faked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from newsletter_cli.smtp_sink import SmtpSink
from shared.db.migrate import upgrade
from shared.messaging.topology import connect
from shared.settings import Settings, load_settings
from tests.support import infra
from tests.support.ports import free_port


def _migrate(url: str) -> None:
    infra.off_thread(upgrade, url)


# How `make test` spreads the suite over its pytest-xdist workers (``--dist loadgroup``): each
# file stays on one worker, as with ``--dist loadfile``, except the files in SPREAD, whose
# tests each build everything they use and go to whichever worker is free. The longest files
# (measured, setup included) are handed out first, so no worker starts one near the end.
SPREAD = frozenset({"tests/integration/test_issue_identity.py"})
LONGEST_FIRST = (
    "tests/integration/test_issue_identity.py",
    "tests/integration/test_dispatcher_fault_cluster.py",
    "tests/integration/test_dispatcher_fault_processes.py",
    "tests/e2e/test_demo.py",
    "tests/integration/test_subscription_load.py",
    "tests/integration/test_dispatcher_fault_broker_restart.py",
    "tests/integration/test_bounces_forgeries.py",
    "tests/browser/test_mail_accessibility.py",
    "tests/integration/test_dispatcher_reconciler.py",
    "tests/integration/test_admin_api_properties.py",
    "tests/integration/test_public_archive.py",
    "tests/integration/test_renderer_pages.py",
    "tests/integration/test_subscription_process.py",
    "tests/browser/test_subscription_pages_look.py",
    "tests/integration/test_dispatcher_outcomes.py",
)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups off the items
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {path: n for n, path in enumerate(LONGEST_FIRST)}

    def path_of(item: pytest.Item) -> str:
        return item.nodeid.split("::", 1)[0]

    items.sort(key=lambda item: rank.get(path_of(item), len(rank)))  # stable within a file
    for item in items:
        if path_of(item) not in SPREAD:
            item.add_marker(pytest.mark.xdist_group(path_of(item)))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Delete the vhosts still waiting for their batch (each xdist worker has its own)."""
    infra.delete_leftover_vhosts()


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """A vhost shared by the session's tests."""
    name, url = infra.declared_vhost()
    try:
        yield url
    finally:
        infra.delete_vhost(name)


@pytest.fixture
def vhost_url() -> Iterator[str]:
    """A vhost of this test's own, so no job of another test can reach it."""
    name, url = infra.declared_vhost()
    try:
        yield url
    finally:
        infra.delete_vhost(name)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for the session."""
    name, url = infra.off_thread(asyncio.run, infra.create_database())
    _migrate(url)
    try:
        yield url
    finally:
        infra.off_thread(asyncio.run, infra.drop_database(name))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'newsletter.db'}"
    _migrate(url)
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Runs the test on both engines (the PostgreSQL database is shared by the session)."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def smtp_sink(tmp_path: Path) -> Iterator[SmtpSink]:
    with SmtpSink(port=free_port(), maildir=tmp_path / "mail") as sink:
        yield sink


@pytest.fixture
def settings(amqp_url: str, sqlite_url: str, tmp_path: Path) -> Settings:
    return load_settings(
        mode="test",
        amqp_url=amqp_url,
        database_url=sqlite_url,
        var_dir=tmp_path,
        secret_key="test-secret-key-" + "x" * 32,
        admin_token="test-admin-token",
    )


@pytest.fixture
async def amqp_connection(amqp_url: str) -> AsyncIterator[object]:
    connection = await connect(amqp_url)
    try:
        yield connection
    finally:
        await connection.close()
