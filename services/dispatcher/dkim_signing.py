"""DKIM signing (RFC 6376, relaxed/relaxed) with the ``cryptography`` library.

The key decides the algorithm: an RSA key signs ``rsa-sha256``, an Ed25519 key
``ed25519-sha256`` (RFC 8463). A second, Ed25519 key (``NEWSLETTER_DKIM_ED25519_*``) adds an
Ed25519 signature alongside the RSA one, as RFC 8463 suggests while verifiers catch up: a
verifier that does not know ed25519-sha256 ignores that signature and checks the RSA one.

Cost per message here (37 KB, 2 cores): RSA-2048 0.3 ms, Ed25519 0.03 ms, the rest (headers,
body hash) about 0.1 ms. cryptography 50's RSA signature holds the GIL for the whole call
(measured: a sign never waits for the GIL while another thread runs Python), so a thread pool
would not take it off the event loop; only another process would.

dkimpy signs a 30 KB message in about 9 ms here, mostly in pure-Python RSA and parsing; the
same signature with ``cryptography`` costs about 0.5 ms. dkimpy stays the reference: the tests
verify these signatures with ``dkim.verify``.

Of what is left, the relaxed canonicalization of a 37 KB body (two regular-expression passes)
cost 1.2 ms, three times the RSA signature. :class:`CanonicalBodyTemplate` canonicalizes an
edition's literal text once; a recipient's canonical body is then a join, like the message.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Mapping, Sequence

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from services.dispatcher import mime

_WSP_RUN = re.compile(rb"[ \t]+")
_TRAILING_WSP = re.compile(rb"[ \t]+\r\n")
_FOLD = re.compile(rb"\r\n(?=[ \t])")


class DkimError(ValueError):
    """The key cannot sign (neither an RSA nor an Ed25519 private key)."""


def canonical_body(body: bytes) -> bytes:
    """Relaxed body canonicalization."""
    body = _WSP_RUN.sub(b" ", body)
    body = _TRAILING_WSP.sub(b"\r\n", body)
    body = body.rstrip(b"\r\n")
    return body + b"\r\n" if body else b""


class CanonicalBodyTemplate:
    """The relaxed canonical body of a template's messages, its literal pieces done once.

    Relaxed body canonicalization only shrinks runs of spaces and tabs and drops them before a
    line break. A marker value with no whitespace and no line break (a URL, an address) ends
    any run on either side of it, so each literal piece can be canonicalized on its own and
    the values joined in between. An empty value may stand where the byte before it is not a
    space or a tab (the per-reader reference after a tracked link's token, empty for most
    readers): no run, and no run before a line break, can then span it. :meth:`canonical`
    returns None when that does not hold (an empty value after a blank, a value with white
    space, a base64 part): the caller canonicalizes the whole body.
    """

    def __init__(self, template: mime.MessageTemplate) -> None:
        pieces = template.body_pieces()
        self._usable = bool(pieces) and not any(isinstance(p, mime.Base64Part) for p in pieces)
        self._pieces = tuple(_collapse(p) if isinstance(p, bytes) else p for p in pieces)
        self._tight = frozenset(
            index
            for index, piece in enumerate(pieces)
            if isinstance(piece, mime.Marker) and index > 0 and _ends_tight(pieces[index - 1])
        )

    def canonical(self, values: Mapping[str, str]) -> bytes | None:
        if not self._usable:
            return None
        out: list[bytes] = []
        escaped: dict[str, bytes] = {}
        for index, piece in enumerate(self._pieces):
            if isinstance(piece, bytes):
                out.append(piece)
                continue
            assert isinstance(piece, mime.Marker)
            value = mime.marker_value(piece, values, escaped)
            if (not value and index not in self._tight) or _BREAKS_RUNS.search(value):
                return None
            out.append(value)
        body = b"".join(out).rstrip(b"\r\n")
        return body + b"\r\n" if body else b""


_BREAKS_RUNS = re.compile(rb"[ \t\r\n]")


def _ends_tight(piece: mime.Piece) -> bool:
    """Whether a literal piece ends with a byte that no run of blanks can continue."""
    return isinstance(piece, bytes) and bool(piece) and piece[-1:] not in {b" ", b"\t"}


def _collapse(chunk: bytes) -> bytes:
    return _TRAILING_WSP.sub(b"\r\n", _WSP_RUN.sub(b" ", chunk))


def canonical_header(name: bytes, value: bytes) -> bytes:
    """Relaxed header canonicalization of one field (without its CRLF)."""
    if b"\n" in value or b"\t" in value or b"  " in value:
        value = _FOLD.sub(b"", value)
        value = _WSP_RUN.sub(b" ", value)
    # A field with no fold, no tab and no double space only loses its outer blanks.
    return name.strip().lower() + b":" + value.strip(b" \t")


def _fields(head: bytes) -> list[tuple[bytes, bytes]]:
    fields: list[tuple[bytes, bytes]] = []
    for raw in re.split(rb"\r\n(?![ \t])", head):
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


class DkimSigner:
    def __init__(
        self, *, private_key: bytes, selector: str, domain: str, headers: Sequence[bytes]
    ) -> None:
        key = load_key(private_key)
        self._key = key
        self.algorithm = "rsa-sha256" if isinstance(key, rsa.RSAPrivateKey) else "ed25519-sha256"
        self._selector = selector
        self._domain = domain
        self._headers = [h.lower() for h in headers]

    def sign(self, message: bytes, *, canonical: bytes | None = None) -> bytes:
        """The ``DKIM-Signature`` field (with its CRLF) to put in front of ``message``.

        ``canonical`` is the body's relaxed canonical form when the caller has it already.
        """
        # Only the header block is copied; the body only when it must be canonicalized here.
        end = message.find(b"\r\n\r\n")
        head = message[: end + 2] if end >= 0 else message + b"\r\n"
        fields = _fields(head)
        by_name: dict[bytes, bytes] = {}
        for name, value in fields:
            by_name[name.strip().lower()] = value  # the last one wins, as verifiers pick it
        signed = [h for h in self._headers if h in by_name]
        if canonical is None:
            canonical = canonical_body(message[end + 4 :] if end >= 0 else b"")
        body_hash = base64.b64encode(hashlib.sha256(canonical).digest())
        value = (
            f" v=1; a={self.algorithm}; c=relaxed/relaxed; d={self._domain}; s={self._selector};"
            f" t={int(time.time())}; h={':'.join(h.decode() for h in signed)};"
            f" bh={body_hash.decode()}; b="
        ).encode()
        data = b"".join(canonical_header(h, by_name[h]) + b"\r\n" for h in signed)
        data += canonical_header(b"DKIM-Signature", value)
        if isinstance(self._key, rsa.RSAPrivateKey):
            signature = self._key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        else:
            # RFC 8463 §3: PureEdDSA over the SHA-256 hash of the header data.
            signature = self._key.sign(hashlib.sha256(data).digest())
        encoded = base64.b64encode(signature)
        folded = b"\r\n\t".join(encoded[i : i + 72] for i in range(0, len(encoded), 72))
        return b"DKIM-Signature:" + value + folded + b"\r\n"


class DkimpySigner:
    """The same signature made by dkimpy itself (``NEWSLETTER_DKIM_SIGNER=dkimpy``).

    About 9 ms per 37 KB message here (its RSA is pure Python) against 0.45 ms for
    :class:`DkimSigner`; for operators who want the reference implementation to sign.
    """

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

    def sign(self, message: bytes, *, canonical: bytes | None = None) -> bytes:
        """The ``DKIM-Signature`` field (with its CRLF); ``canonical`` is not needed here."""
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
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=present,
                signature_algorithm=self._algorithm,
                linesep=b"\r\n",
            )
        )
