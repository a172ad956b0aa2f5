"""DKIM signatures (dkimpy) over the headers mailbox providers look at."""

from __future__ import annotations

from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from services.dispatcher import mime
from services.dispatcher.composer import Composer, Recipient
from services.dispatcher.dkim_signing import CanonicalBodyTemplate, canonical_body
from services.dispatcher.settings import load_dispatcher_settings
from shared.messaging import placeholders


@pytest.mark.parametrize("signer", ["fast", "dkimpy"])
def test_a_signed_message_verifies_and_covers_the_unsubscribe_headers(
    tmp_path: Path, signer: str
) -> None:
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
        dkim_signer=signer,
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


def _template() -> mime.MessageTemplate:
    settings = load_dispatcher_settings(mode="test", secret_key="k" * 40)
    return mime.build_template(
        envelope=Composer(settings=settings).envelope(
            subject="Weekly", language="en", campaign="c"
        ),
        # Runs of spaces and tabs next to markers, trailing blanks, blank lines at the end.
        text=(
            f"Hello \t  {placeholders.RECIPIENT}  ,\t\n"
            f"  indented   line  \n\n{placeholders.UNSUBSCRIBE_URL}\t\n\n\n"
        ),
        html_body=(f'<p>  a  \t b </p>  \n<a href="{placeholders.PREFERENCES_URL}">  x  </a>   \n'),
    )


def test_the_canonical_body_built_from_the_template_is_the_whole_body_canonicalized() -> None:
    template = _template()
    canonical = CanonicalBodyTemplate(template)
    values = {
        placeholders.RECIPIENT: "reader@example.org",
        placeholders.UNSUBSCRIBE_URL: "https://example.org/unsubscribe?token=a.b-c",
        placeholders.PREFERENCES_URL: "https://example.org/preferences?token=a&b",
    }
    body = template.render(values).partition(b"\r\n\r\n")[2]
    assert canonical.canonical(values) == canonical_body(body)


def test_a_value_with_whitespace_or_an_empty_one_falls_back_to_the_whole_body() -> None:
    canonical = CanonicalBodyTemplate(_template())
    base = {
        placeholders.RECIPIENT: "reader@example.org",
        placeholders.UNSUBSCRIBE_URL: "https://example.org/u",
        placeholders.PREFERENCES_URL: "https://example.org/p",
    }
    assert canonical.canonical(base) is not None
    assert canonical.canonical({**base, placeholders.RECIPIENT: "two  words"}) is None
    assert canonical.canonical({**base, placeholders.UNSUBSCRIBE_URL: ""}) is None
