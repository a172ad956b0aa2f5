"""DKIM signatures (dkimpy) over the headers mailbox providers look at."""

from __future__ import annotations

from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from services.dispatcher import mime
from services.dispatcher.composer import Composer, Recipient
from services.dispatcher.settings import load_dispatcher_settings
from shared.messaging import placeholders


def test_a_signed_message_verifies_and_covers_the_unsubscribe_headers(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_path = tmp_path / "dkim.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    import base64

    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    settings = load_dispatcher_settings(
        mode="test",
        secret_key="k" * 40,
        dkim_private_key_path=key_path,
        dkim_selector="nl2026",
        dkim_domain="example.org",
    )
    composer = Composer(settings=settings)
    template = mime.build_template(
        envelope=composer.envelope(
            subject="Дайджэст: " + "навіны тыдня " * 12, language="be", campaign="c"
        ),
        text=f"Прывітанне\n.a line that starts with a dot\n{placeholders.UNSUBSCRIBE_URL}\n",
        html_body=f'<p>Прывітанне</p><a href="{placeholders.UNSUBSCRIBE_URL}">x</a>',
    )
    assert not template.dot_safe, "a leading dot must be stuffed on the wire"
    data = composer.render(
        template, composer.values(Recipient(5, 9, "reader@example.net", "d5.abc"))
    )
    assert data.startswith(b"DKIM-Signature:")

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"nl2026._domainkey.example.org."
        return record

    assert dkim.verify(data, dnsfunc=dns)
    signature = data.split(b"\r\n\r\n", 1)[0].decode()
    signed = signature.split(" h=", 1)[1].split(";", 1)[0].replace("\r\n", "").replace(" ", "")
    for header in ("from", "subject", "date", "message-id", "list-unsubscribe"):
        assert header in signed.lower().split(":"), f"{header} not signed"
    assert "list-unsubscribe-post" in signed.lower().split(":")
