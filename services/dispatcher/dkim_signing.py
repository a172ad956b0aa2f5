"""DKIM signing (RFC 6376, ``c=relaxed/simple``) with the ``cryptography`` library.

The key decides the algorithm: an RSA key signs ``rsa-sha256``, an Ed25519 key
``ed25519-sha256`` (RFC 8463). A second, Ed25519 key (``NEWSLETTER_DKIM_ED25519_*``) adds an
Ed25519 signature alongside the RSA one, as RFC 8463 suggests while verifiers catch up: a
verifier that does not know ed25519-sha256 ignores that signature and checks the RSA one.

Headers are canonicalized ``relaxed`` (case and folding change on the way often); the body
``simple`` (RFC 6376 §3.4.3: the bytes as sent, trailing empty lines ignored), which every
verifier must accept. With it the body hash is one ``hashlib`` call over the message's own
bytes: no per-recipient canonical copy of a 33 KB body, no regular expressions (relaxed body
canonicalization, even with an edition's literal text canonicalized once per template, was a
second join of the body and a scan of every marker value per message). What ``simple`` gives
up is tolerance of a relay that changes whitespace inside the body; our bodies are 8bit UTF-8
with short lines and no trailing blanks added by us, and a relay that re-encodes 8bit breaks a
relaxed body hash just the same.

A signature is made from two inputs, so that its costly part can run in another process:
:func:`split_head` and :func:`simple_body_hash` (the header block, a copy of about 1 KB, and
the SHA-256 of the body: one ``hashlib`` call, 0.02 ms for 33 KB, on the event loop), then
:meth:`DkimSigner.field` (the relaxed header canonicalization, the tag list, the private-key
operation and its base64: what :mod:`services.dispatcher.dkim_process` runs for RSA keys).
Cost per 33 KB message here: RSA-2048 about 0.32 ms in all (0.25-0.29 ms of it the
private-key operation), Ed25519 0.05 ms: Ed25519 signs inline, cheaper than any hand-off.

dkimpy signs a 30 KB message in about 9 ms here, mostly in pure-Python RSA and parsing; the
same signature with ``cryptography`` costs about 0.4 ms. dkimpy stays the reference: the tests
verify these signatures with ``dkim.verify``.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Sequence

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

CANONICALIZATION = "relaxed/simple"
_WSP_RUN = re.compile(rb"[ \t]+")
_FOLD = re.compile(rb"\r\n(?=[ \t])")
_FIELD_END = re.compile(rb"\r\n(?![ \t])")


class DkimError(ValueError):
    """The key cannot sign (neither an RSA nor an Ed25519 private key)."""


def simple_body_hash(message: bytes, start: int) -> bytes:
    """The SHA-256 of the simple canonical form of ``message[start:]`` (RFC 6376 §3.4.3):
    the body as it is, its trailing empty lines dropped; an empty body or one without a final
    CRLF gets one. The body is hashed in place (no copy)."""
    end = len(message)
    while end - start >= 4 and message.endswith(b"\r\n\r\n", start, end):
        end -= 2
    digest = hashlib.sha256(memoryview(message)[start:end])
    if end - start < 2 or not message.endswith(b"\r\n", start, end):
        digest.update(b"\r\n")
    return digest.digest()


def canonical_header(name: bytes, value: bytes) -> bytes:
    """Relaxed header canonicalization of one field (without its CRLF)."""
    if b"\n" in value or b"\t" in value or b"  " in value:
        value = _FOLD.sub(b"", value)
        value = _WSP_RUN.sub(b" ", value)
    # A field with no fold, no tab and no double space only loses its outer blanks.
    return name.strip().lower() + b":" + value.strip(b" \t")


def _fields(head: bytes) -> list[tuple[bytes, bytes]]:
    fields: list[tuple[bytes, bytes]] = []
    for raw in _FIELD_END.split(head):
        if not raw:
            continue
        name, _, value = raw.partition(b":")
        fields.append((name, value))
    return fields


def load_key(private_key: bytes) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
    """A PEM private key that can sign DKIM, or :class:`DkimError`."""
    try:
        key = serialization.load_pem_private_key(private_key, password=None)
    except (ValueError, TypeError) as err:
        raise DkimError(f"the DKIM key does not load: {err}") from err
    if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise DkimError("the DKIM key must be an RSA or an Ed25519 private key")
    return key


def is_ed25519(private_key: bytes) -> bool:
    return isinstance(load_key(private_key), ed25519.Ed25519PrivateKey)


def split_head(message: bytes) -> tuple[bytes, int]:
    """The header block of ``message`` (each field with its CRLF; a copy of the header part
    only, never of the body) and where the body begins."""
    end = message.find(b"\r\n\r\n")
    if end < 0:
        return message + b"\r\n", len(message)
    return message[: end + 2], end + 4


class DkimSigner:
    """Signs with one key, loaded once; :attr:`offload` says whether the signature is worth
    another process (an RSA key: the private-key operation is most of the cost)."""

    def __init__(
        self, *, private_key: bytes, selector: str, domain: str, headers: Sequence[bytes]
    ) -> None:
        key = load_key(private_key)
        self._key = key
        self.offload = isinstance(key, rsa.RSAPrivateKey)
        self.algorithm = "rsa-sha256" if self.offload else "ed25519-sha256"
        self._selector = selector
        self._domain = domain
        self._headers = [h.lower() for h in headers]
        self._padding = padding.PKCS1v15()
        self._hash = hashes.SHA256()
        # The tag list up to t=, and from h= on, are the same for every message but for t=.
        self._tags = (
            f" v=1; a={self.algorithm}; c={CANONICALIZATION}; d={domain}; s={selector}; t="
        ).encode()

    def field(self, head: bytes, body_hash: bytes) -> bytes:
        """The ``DKIM-Signature`` field (with its CRLF) of a message with this header block
        (:func:`split_head`) and body hash (:func:`simple_body_hash`): the relaxed header
        canonicalization, the tag list and the private-key operation."""
        by_name: dict[bytes, bytes] = {}
        for name, value in _fields(head):
            by_name[name.strip().lower()] = value  # the last one wins, as verifiers pick it
        signed = [h for h in self._headers if h in by_name]
        value = b"".join(
            [
                self._tags,
                str(int(time.time())).encode(),
                b"; h=",
                b":".join(signed),
                b"; bh=",
                base64.b64encode(body_hash),
                b"; b=",
            ]
        )
        data = b"".join(
            [
                *(canonical_header(h, by_name[h]) + b"\r\n" for h in signed),
                canonical_header(b"DKIM-Signature", value),
            ]
        )
        if isinstance(self._key, rsa.RSAPrivateKey):
            signature = self._key.sign(data, self._padding, self._hash)
        else:
            # RFC 8463 §3: PureEdDSA over the SHA-256 hash of the header data.
            signature = self._key.sign(hashlib.sha256(data).digest())
        encoded = base64.b64encode(signature)
        folded = b"\r\n\t".join(encoded[i : i + 72] for i in range(0, len(encoded), 72))
        return b"DKIM-Signature:" + value + folded + b"\r\n"

    def sign(self, message: bytes) -> bytes:
        """The ``DKIM-Signature`` field (with its CRLF) to put in front of ``message``."""
        head, body_start = split_head(message)
        return self.field(head, simple_body_hash(message, body_start))


class DkimpySigner:
    """The same signature made by dkimpy itself (``NEWSLETTER_DKIM_SIGNER=dkimpy``).

    About 9 ms per 37 KB message here (its RSA is pure Python, holding the GIL: a thread would
    not help) against 0.4 ms for :class:`DkimSigner`; for operators who want the reference
    implementation to sign.
    """

    offload = False

    def __init__(
        self, *, private_key: bytes, selector: str, domain: str, headers: Sequence[bytes]
    ) -> None:
        # The same check as DkimSigner's, refused at start if the key cannot sign.
        key = load_key(private_key)
        if isinstance(key, rsa.RSAPrivateKey):
            self._algorithm, self._key = b"rsa-sha256", private_key
        else:
            # dkimpy takes an Ed25519 key as the base64 of its raw 32 bytes.
            raw = key.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            self._algorithm, self._key = b"ed25519-sha256", base64.b64encode(raw)
        self._selector = selector.encode()
        self._domain = domain.encode()
        self._headers = [h.lower() for h in headers]

    def sign(self, message: bytes) -> bytes:
        """The ``DKIM-Signature`` field (with its CRLF)."""
        head = message.partition(b"\r\n\r\n")[0].lower()
        present = [
            h for h in self._headers if head.startswith(h + b":") or b"\n" + h + b":" in head
        ]
        return bytes(
            dkim.sign(
                message,
                self._selector,
                self._domain,
                self._key,
                canonicalize=(b"relaxed", b"simple"),
                include_headers=present,
                signature_algorithm=self._algorithm,
                linesep=b"\r\n",
            )
        )
