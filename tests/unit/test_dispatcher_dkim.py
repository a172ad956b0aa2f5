"""DKIM signatures (dkimpy) over the headers mailbox providers look at."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from services.dispatcher import mime
from services.dispatcher.composer import Composer, Recipient
from services.dispatcher.dkim_signing import (
    DkimError,
    canonical_header,
    simple_body_hash,
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


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\r\n",
        b"\r\n\r\n\r\n",
        b"no final line break",
        b"one line\r\n",
        b"trailing blank lines\r\n\r\n\r\n",
        b"  runs \t of  blanks  \r\n\tare kept \r\n",
        "Прывітанне, чытач\r\n\r\nПривет\r\n\r\n".encode(),
    ],
)
def test_the_simple_body_hash_is_dkimpys_simple_canonical_body_hashed(body: bytes) -> None:
    import hashlib

    from dkim.canonicalization import Simple

    message = b"Subject: x\r\n\r\n" + body
    start = message.index(b"\r\n\r\n") + 4
    expected = hashlib.sha256(Simple.canonicalize_body(body)).digest()
    assert simple_body_hash(message, start) == expected


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

    try:
        return bool(dkim.DKIM(data).verify(idx=idx, dnsfunc=dns))
    except dkim.ValidationError:  # a body hash mismatch is raised, not returned
        return False


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


# --- real composed mails: both algorithms, both paths (inline and the signing threads) -------

_WORD = "Доўгаеслова" * 120  # longer than a line: that part falls back to base64


def _edition(composer: Composer, language: str, *, base64_part: bool) -> mime.MessageTemplate:
    """A be or ru edition as the renderer makes them: Cyrillic subject, sender name and list
    name (encoded words, folded), Cyrillic text with the blanks relaxed canonicalization would
    have collapsed, a line starting with a dot, blank lines at the end."""
    paragraph = {
        "be": "Рада сабралася ў аўторак  і зацвердзіла\tбюджэт новай бібліятэкі. ",
        "ru": "Совет собрался во вторник  и утвердил\tбюджет новой библиотеки. ",
    }[language]
    text = (
        f"{paragraph * 20}\n\n   з водступам  \n.радок з кропкай\n"
        f"{placeholders.UNSUBSCRIBE_URL}\n{_WORD if base64_part else ''}\n\n\n"
    )
    html = (
        f"<p>{paragraph * 20}</p>\n<p>  {placeholders.RECIPIENT}  </p>\n"
        f'<a href="{placeholders.UNSUBSCRIBE_URL}">адпісацца</a>\n'
        f'<a href="{placeholders.PREFERENCES_URL}">налады</a>   \n'
    )
    subject = {"be": "Штотыднёвы дайджэст: навіны тыдня №48", "ru": "Дайджест: новости недели"}
    envelope = composer.envelope(subject=subject[language] * 3, language=language, campaign="c")
    return mime.build_template(envelope=envelope, text=text, html_body=html)


def _composer(tmp_path: Path, signer: str, *, algorithms: tuple[str, ...]) -> Composer:
    keys: dict[str, Path] = {}
    if "rsa" in algorithms:
        keys["dkim_private_key_path"] = _pem(_RSA_KEY, tmp_path / "rsa.pem")
    if "ed25519" in algorithms:
        name = "dkim_ed25519_private_key_path" if "rsa" in algorithms else "dkim_private_key_path"
        keys[name] = _pem(_ED_KEY, tmp_path / "ed.pem")
    settings = load_dispatcher_settings(
        mode="test",
        secret_key="k" * 40,
        dkim_selector="ed1" if algorithms == ("ed25519",) else "rsa1",
        dkim_ed25519_selector="ed1",
        dkim_domain="example.org",
        dkim_signer=signer,
        **keys,
    )
    return Composer(settings=settings)


_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_ED_KEY = ed25519.Ed25519PrivateKey.generate()


@pytest.mark.parametrize("algorithms", [("rsa",), ("ed25519",), ("rsa", "ed25519")])
@pytest.mark.parametrize("signer", ["fast", "dkimpy"])
@pytest.mark.parametrize("language", ["be", "ru"])
async def test_composed_cyrillic_mails_verify_with_dkimpy_on_both_paths(
    tmp_path: Path, signer: str, algorithms: tuple[str, ...], language: str
) -> None:
    composer = _composer(tmp_path, signer, algorithms=algorithms)
    records = _records(
        _RSA_KEY if "rsa" in algorithms else None,
        _ED_KEY if "ed25519" in algorithms else None,
    )
    try:
        for base64_part in (False, True):
            template = _edition(composer, language, base64_part=base64_part)
            assert template.dot_safe is base64_part, "the dot line is literal unless in base64"
            values = composer.values(Recipient(7, 11, "чытач@example.net", "d7.abcdef01"))
            for path, data in (
                ("compose", await composer.compose(template, values)),
                ("render", composer.render(template, values)),
            ):
                head, _, body = data.partition(b"\r\n\r\n")
                assert head.count(b"DKIM-Signature:") == len(algorithms), path
                assert b"c=relaxed/simple" in head, f"{path}: not relaxed/simple"
                assert (b"Content-Transfer-Encoding: base64" in body) == base64_part, path
                for idx in range(len(algorithms)):
                    what = f"{path}, {signer}, signature {idx} of {algorithms}, {language}"
                    assert _verify(data, records, idx), f"dkimpy rejects: {what}"
                # The body is covered as sent: one blank more anywhere in it breaks every one.
                tampered = data.replace("  і ".encode(), "   і ".encode(), 1).replace(
                    "  и ".encode(), "   и ".encode(), 1
                )
                assert tampered != data
                for idx in range(len(algorithms)):
                    assert not _verify(tampered, records, idx), f"{path}: a changed body verified"
    finally:
        composer.close()


async def test_rsa_signatures_are_made_by_the_signing_process(tmp_path: Path) -> None:
    import psutil

    composer = _composer(tmp_path, "fast", algorithms=("rsa",))
    template = _edition(composer, "ru", base64_part=False)
    values = composer.values(Recipient(7, 11, "reader@example.net", "d7.abcdef01"))
    try:
        data = await composer.compose(template, values)
        (pid,) = composer.signing_pids
        child = psutil.Process(pid)
        assert child.ppid() == os.getpid(), "the signer is not this process's child"
        assert "services.dispatcher.dkim_process" in child.cmdline()
        # Signing is all the child does: its CPU grows with the signatures it makes.
        before = child.cpu_times()
        many = await asyncio.gather(*(composer.compose(template, values) for _ in range(300)))
        after = child.cpu_times()
    finally:
        composer.close()
    assert _verify(data, _records(_RSA_KEY, None), 0)
    assert all(_verify(m, _records(_RSA_KEY, None), 0) for m in many[::50])
    spent = (after.user + after.system) - (before.user + before.system)
    assert spent >= 300 * 0.0001, f"the child spent {spent:.3f} s on 300 signatures"


async def test_signatures_waiting_on_a_signing_process_that_dies_are_made_inline(
    tmp_path: Path,
) -> None:
    import signal

    import psutil

    composer = _composer(tmp_path, "fast", algorithms=("rsa", "ed25519"))
    template = _edition(composer, "be", base64_part=False)
    values = composer.values(Recipient(7, 11, "чытач@example.net", "d7.abcdef01"))
    records = _records(_RSA_KEY, _ED_KEY)
    try:
        await composer.compose(template, values)
        (first,) = composer.signing_pids
        os.kill(first, signal.SIGKILL)
        psutil.Process(first).wait(5)
        mails = await asyncio.gather(*(composer.compose(template, values) for _ in range(40)))
        # The loss is seen at the latest when the mails above were answered; the next
        # signature starts a new process.
        again = await composer.compose(template, values)
        pids = composer.signing_pids
    finally:
        composer.close()
    for data in [*mails, again]:
        assert _verify(data, records, 0), "an RSA signature made after the loss does not verify"
        assert _verify(data, records, 1), "an Ed25519 signature does not verify"
    assert pids, "no signing process after the loss"
    assert pids != [first], "the dead signing process was not replaced"


async def test_a_signing_process_that_stops_answering_is_killed_and_its_mails_signed_inline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal

    import psutil
    import structlog

    from services.dispatcher import dkim_process
    from tests.support.dispatch_seed import eventually

    monkeypatch.setattr(dkim_process, "ANSWER_TIMEOUT_S", 0.3)
    composer = _composer(tmp_path, "fast", algorithms=("rsa",))
    template = _edition(composer, "ru", base64_part=False)
    values = composer.values(Recipient(7, 11, "reader@example.net", "d7.abcdef01"))
    try:
        await composer.compose(template, values)
        (pid,) = composer.signing_pids
        os.kill(pid, signal.SIGSTOP)  # alive, but answers nothing
        with structlog.testing.capture_logs() as logs:
            mails = await asyncio.wait_for(
                asyncio.gather(*(composer.compose(template, values) for _ in range(5))), 10
            )

        async def gone() -> bool:
            try:
                return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return True

        await eventually(gone, timeout=10, what="the hung signing process killed")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        composer.close()
    assert all(_verify(m, _records(_RSA_KEY, None), 0) for m in mails)
    assert "dkim_signing_process_hung" in [e["event"] for e in logs]


async def test_a_signing_process_that_cannot_start_leaves_rsa_signing_inline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    import sys

    import structlog

    false = shutil.which("false")
    assert false is not None
    monkeypatch.setattr(sys, "executable", false)  # the child exits at once, unconfigured
    composer = _composer(tmp_path, "fast", algorithms=("rsa", "ed25519"))
    template = _edition(composer, "be", base64_part=False)
    values = composer.values(Recipient(7, 11, "чытач@example.net", "d7.abcdef01"))
    try:
        with structlog.testing.capture_logs() as logs:
            mails = [await composer.compose(template, values) for _ in range(3)]
        pids = composer.signing_pids
    finally:
        composer.close()
    records = _records(_RSA_KEY, _ED_KEY)
    assert all(_verify(m, records, 0) and _verify(m, records, 1) for m in mails)
    events = [e["event"] for e in logs]
    assert events.count("dkim_signing_process_not_started") == 1, f"retried at once: {events}"
    assert pids == []
