"""What a signed copy looks like, byte for byte: the MAC line its sidecar gains, and the
envelope an encrypted copy's bytes become (docs/file-formats.md, Signed copies). Pure:
keys in, bytes out; the store that uses them is seal."""

from __future__ import annotations

import re

from .errors import (
    MissingDependency,
)
from .formats import parse_sidecar, sha256_hex

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    from typing import Any

    from .keys import Key, Keyring


MAC_TAG = "dalio-mac-1"


ENVELOPE_TAG = b"dalio-sealed-1 "


AEAD_NAME = "AES-256-GCM"


NOT_AUTHENTICATED = "not authenticated"
UNKNOWN_KEY = "unknown key"


OVERHEAD = 256
"""The most an envelope adds to an object (header, nonce, tag): reads allow for it."""


_MAC_LINE = re.compile(r"# dalio-mac-1 key=([0-9a-f]{12}) writer=([0-9a-f]{12}) "
                       r"hmac-sha256=([0-9a-f]{64})\n")


_HEADER = re.compile(rb"dalio-sealed-1 key=([0-9a-f]{12}) writer=([0-9a-f]{12}) "
                     rb"aead=AES-256-GCM\n")


class NotAuthentic(Exception):
    """Why an object's signature does not hold (seal turns it into IntegrityError)."""


class UnknownKey(NotAuthentic):
    """Signed (or encrypted) with a key id the key file does not hold: a key rotated
    elsewhere, or a wrong key file. Not proof of a forgery: a doubt."""


def _hmac(secret: bytes, message: bytes) -> bytes:
    import hashlib
    import hmac
    return hmac.new(secret, message, hashlib.sha256).digest()


def _subkey(key: Key, purpose: bytes) -> bytes:
    """A key for one purpose (signing, encrypting, nonces), derived from the key file's."""
    return _hmac(key.secret, b"dalio " + purpose)


def _mac(key: Key, name: str, writer: str, digest: str) -> str:
    return _hmac(_subkey(key, b"mac"), "\0".join((MAC_TAG, name, writer, digest)).encode()
                 ).hex()


def sign_sidecar(key: Key, name: str, writer: str, sidecar: bytes) -> bytes:
    """Object `name`'s sidecar with its MAC line: by `writer`, under `key`."""
    digest = parse_sidecar(sidecar, name)
    return sidecar + (f"# {MAC_TAG} key={key.id} writer={writer} "
                      f"hmac-sha256={_mac(key, name, writer, digest)}\n").encode()


def open_sidecar(ring: Keyring, name: str, data: bytes) -> tuple[bytes, str, str]:
    """(the plain sidecar line, the digest it records, the writer that signed it) of a
    signed sidecar of object `name`; NotAuthentic says why it does not verify."""
    text = data.decode("utf-8", errors="replace")
    first, _, rest = text.partition("\n")
    found = _MAC_LINE.fullmatch(rest)
    if found is None:
        raise NotAuthentic("it carries no signature (made without the key, or planted)")
    key = ring.get(found[1])
    if key is None:
        raise UnknownKey(f"it is signed with key {found[1]}, which the {ring.source} "
                           "does not hold (a wrong key, or a key rotated out)")
    try:
        digest = parse_sidecar((first + "\n").encode(), name)
    except ValueError as exc:
        raise NotAuthentic(f"its sidecar is malformed: {exc}") from None
    from hmac import compare_digest
    if not compare_digest(_mac(key, name, found[2], digest), found[3]):
        raise NotAuthentic("its signature does not verify (changed, renamed or replayed "
                           "under another name)")
    return (first + "\n").encode(), digest, found[2]


def _aead(key: Key) -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:
        raise MissingDependency("encrypted copies (backup.encrypt) need the cryptography "
                                "package: pip install 'daliolite[keys]'") from None
    return AESGCM(_subkey(key, b"encryption"))


def seal(key: Key, name: str, writer: str, data: bytes) -> bytes:
    """The envelope of `data` as object `name`: encrypted and authenticated together
    with its name, writer and key id. The nonce is derived from all of them and the
    bytes, so sending the same copy twice writes the same object (idempotent), and no
    nonce ever serves two messages."""
    header = ENVELOPE_TAG + f"key={key.id} writer={writer} aead={AEAD_NAME}\n".encode()
    associated = header + name.encode()
    nonce = _hmac(_subkey(key, b"nonce"), associated + bytes.fromhex(sha256_hex(data)))[:12]
    return header + nonce + _aead(key).encrypt(nonce, data, associated)


def is_sealed(data: bytes) -> bool:
    return data.startswith(ENVELOPE_TAG)


def unseal(ring: Keyring, name: str, data: bytes) -> bytes:
    """The plaintext of envelope `data` stored as object `name`; NotAuthentic says why
    it does not open."""
    header = _HEADER.match(data)
    if header is None:
        raise NotAuthentic("its envelope header is damaged")
    key = ring.get(header[1].decode())
    if key is None:
        raise UnknownKey(f"it is encrypted with key {header[1].decode()}, which the "
                           f"{ring.source} does not hold (a wrong key, or a key rotated out)")
    body = data[header.end():]
    from cryptography.exceptions import InvalidTag
    try:
        return _aead(key).decrypt(body[:12], body[12:], header[0] + name.encode())
    except (InvalidTag, ValueError):
        raise NotAuthentic("it does not decrypt under its name (changed, renamed or "
                           "replayed under another name)") from None
