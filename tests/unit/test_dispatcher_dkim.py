"""DKIM signatures (dkimpy) over the headers mailbox providers look at."""

from __future__ import annotations

from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from services.dispatcher import mime
from services.dispatcher.composer import Composer, Recipient
from services.dispatcher.dkim_signing import (
    CanonicalBodyTemplate,
    DkimError,
    canonical_body,
    canonical_header,
)
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


def test_a_value_with_whitespace_or_an_empty_one_after_a_blank_falls_back() -> None:
    template = _template()
    canonical = CanonicalBodyTemplate(template)
    base = {
        placeholders.RECIPIENT: "reader@example.org",
        placeholders.UNSUBSCRIBE_URL: "https://example.org/u",
        placeholders.PREFERENCES_URL: "https://example.org/p",
    }
    assert canonical.canonical(base) is not None
    assert canonical.canonical({**base, placeholders.RECIPIENT: "two  words"}) is None
    # An empty value after a blank ("Hello \t  " before the address) cannot take the quick
    # path; one at the start of a line can, and gives the whole body's canonical form.
    assert canonical.canonical({**base, placeholders.RECIPIENT: ""}) is None
    empty = {**base, placeholders.UNSUBSCRIBE_URL: ""}
    body = template.render(empty).partition(b"\r\n\r\n")[2]
    assert canonical.canonical(empty) == canonical_body(body)


def _pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _records(
    rsa_key: rsa.RSAPrivateKey | None, ed_key: ed25519.Ed25519PrivateKey | None
) -> dict[bytes, bytes]:
    import base64

    records = {}
    if rsa_key is not None:
        public = rsa_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        records[b"rsa1._domainkey.example.org."] = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    if ed_key is not None:
        raw = ed_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        records[b"ed1._domainkey.example.org."] = b"v=DKIM1; k=ed25519; p=" + base64.b64encode(raw)
    return records


def _signed(composer: Composer) -> bytes:
    template = mime.build_template(
        envelope=composer.envelope(subject="Дайджэст  тыдня", language="be", campaign="c"),
        text=f"Прывітанне\n{placeholders.UNSUBSCRIBE_URL}\n",
        html_body=f'<p>Прывітанне</p><a href="{placeholders.UNSUBSCRIBE_URL}">x</a>',
    )
    return composer.render(
        template, composer.values(Recipient(5, 9, "reader@example.net", "d5.abc"))
    )


def _verify(data: bytes, records: dict[bytes, bytes], idx: int) -> bool:
    def dns(name: bytes, timeout: int = 5) -> bytes:
        return records[name]

    return bool(dkim.DKIM(data).verify(idx=idx, dnsfunc=dns))


@pytest.mark.parametrize("signer", ["fast", "dkimpy"])
def test_an_ed25519_key_signs_ed25519_sha256_that_dkimpy_verifies(
    tmp_path: Path, signer: str
) -> None:
    ed_key = ed25519.Ed25519PrivateKey.generate()
    settings = load_dispatcher_settings(
        mode="test",
        secret_key="k" * 40,
        dkim_private_key_path=_pem(ed_key, tmp_path / "ed.pem"),
        dkim_selector="ed1",
        dkim_domain="example.org",
        dkim_signer=signer,
    )
    data = _signed(Composer(settings=settings))
    assert data.count(b"DKIM-Signature:") == 1
    assert b"a=ed25519-sha256" in data.partition(b"\r\n\r\n")[0]
    assert _verify(data, _records(None, ed_key), 0), "dkimpy rejects the ed25519 signature"
    tampered = data.replace(b"reader@example.net", b"reader@example.com")
    assert not _verify(tampered, _records(None, ed_key), 0), "a changed To still verified"


def test_an_ed25519_signature_goes_alongside_the_rsa_one_and_both_verify(tmp_path: Path) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    settings = load_dispatcher_settings(
        mode="test",
        secret_key="k" * 40,
        dkim_private_key_path=_pem(rsa_key, tmp_path / "rsa.pem"),
        dkim_selector="rsa1",
        dkim_ed25519_private_key_path=_pem(ed_key, tmp_path / "ed.pem"),
        dkim_ed25519_selector="ed1",
        dkim_domain="example.org",
    )
    data = _signed(Composer(settings=settings))
    head = data.partition(b"\r\n\r\n")[0]
    assert head.count(b"DKIM-Signature:") == 2
    assert b"a=rsa-sha256" in head
    assert b"a=ed25519-sha256" in head
    records = _records(rsa_key, ed_key)
    assert _verify(data, records, 0), "the first signature does not verify"
    assert _verify(data, records, 1), "the second signature does not verify"


def test_an_extra_key_that_is_not_ed25519_is_refused_at_start(tmp_path: Path) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = _pem(rsa_key, tmp_path / "rsa.pem")
    settings = load_dispatcher_settings(
        mode="test",
        secret_key="k" * 40,
        dkim_private_key_path=path,
        dkim_ed25519_private_key_path=path,
    )
    with pytest.raises(DkimError, match="Ed25519"):
        Composer(settings=settings)


@pytest.mark.parametrize(
    "value",
    [
        b" plain value",
        b" two  spaces",
        b" a\ttab",
        b"\tleading tab ",
        b" folded\r\n line\r\n\tand more  ",
        b" trailing   ",
        b"",
    ],
)
def test_the_quick_path_of_header_canonicalization_agrees_with_the_rules(value: bytes) -> None:
    import re

    unfolded = re.sub(rb"\r\n(?=[ \t])", b"", value)
    expected = b"subject:" + re.sub(rb"[ \t]+", b" ", unfolded).strip(b" \t")
    assert canonical_header(b"Subject ", value) == expected
