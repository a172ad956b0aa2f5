"""A signed send through the real planner, RabbitMQ, workers and an SMTP server over a socket:
every mail the server took carries an RSA and an Ed25519 signature that dkimpy verifies.

The workers sign with ``Composer.compose`` (the body hashed on the event loop, the RSA signature
made by the signing process); the editions are the seed's en/be/ru ones (Cyrillic subjects, sender
names and bodies, a line that starts with a dot, so dot-stuffing is on the way too).
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from services.dispatcher.settings import load_dispatcher_settings
from shared.messaging.publisher import Publisher
from shared.messaging.schemas import PlanSend
from shared.messaging.topology import PLAN_SEND, connect
from tests.support import dispatch_seed
from tests.support.database import sessions_on
from tests.support.test_mta import ScriptedMta

pytestmark = pytest.mark.integration


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    async with sessions_on(database_url) as factory:
        yield factory


def _pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _records(rsa_key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey) -> dict[bytes, bytes]:
    rsa_public = rsa_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ed_public = ed_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return {
        b"rsa1._domainkey.example.org.": b"v=DKIM1; k=rsa; p=" + base64.b64encode(rsa_public),
        b"ed1._domainkey.example.org.": b"v=DKIM1; k=ed25519; p=" + base64.b64encode(ed_public),
    }


async def test_every_mail_of_a_signed_send_verifies_with_both_signatures(
    vhost_url: str,
    database_url: str,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    records = _records(rsa_key, ed_key)
    await dispatch_seed.add_subscribers(sessions, 6)
    expected = await dispatch_seed.expected_copies(sessions, ["en", "be", "ru"])
    send_id = str(uuid.uuid4())
    await dispatch_seed.add_editions(sessions, send_id, ("en", "be", "ru"))
    with ScriptedMta() as mta:
        settings = load_dispatcher_settings(
            mode="test",
            amqp_url=vhost_url,
            database_url=database_url,
            smtp_url=mta.url,
            var_dir=tmp_path,
            secret_key="test-secret-key-" + "x" * 32,
            smtp_timeout_s=2.0,
            dkim_private_key_path=_pem(rsa_key, tmp_path / "rsa.pem"),
            dkim_selector="rsa1",
            dkim_ed25519_private_key_path=_pem(ed_key, tmp_path / "ed.pem"),
            dkim_ed25519_selector="ed1",
            dkim_domain="example.org",
        )
        async with dispatch_seed.RunningDispatcher(settings):
            connection = await connect(vhost_url)
            try:
                publisher = await Publisher.open(connection)
                await publisher.publish(
                    PlanSend(send_id=send_id, issue_key="2026-w48", segments=["en", "be", "ru"]),
                    routing_key=PLAN_SEND,
                )
            finally:
                await connection.close()
            send = await dispatch_seed.wait_for_send(sessions, send_id)
        accepted = list(mta.handler.accepted)
    assert send.total == sum(expected.values()) >= 18
    assert mta.handler.copies() == expected

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return records[name]

    languages = set()
    for mail in accepted:
        head = mail.data.partition(b"\r\n\r\n")[0]
        languages.add(mail.parsed()["Content-Language"])
        assert head.count(b"DKIM-Signature:") == 2, head[:400]
        assert b"a=rsa-sha256" in head
        assert b"a=ed25519-sha256" in head
        for idx in (0, 1):
            try:
                verified = dkim.DKIM(mail.data).verify(idx=idx, dnsfunc=dns)
            except dkim.ValidationError as err:
                verified = False
                reason = str(err)
            else:
                reason = "signature does not verify"
            assert verified, f"{mail.rcpt}: signature {idx}: {reason}"
    assert languages == {"en", "be", "ru"}
