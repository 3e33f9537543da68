"""Signed copies: what makes an object in a mirror or S3 prove where it came from.

With a key configured, every backup and restore point sent to a mirror or S3 goes
through a SealedStore. Its sidecar gains a second line, a comment that `sha256sum -c`
skips:

    3f1c...e9  last_rebalance_2026-02-17_10-30-00.123456Z.json
    # dalio-mac-1 key=5d0c2a9e41b7 writer=0a1b2c3d4e5f hmac-sha256=9c2e...

an HMAC-SHA256 (under a key derived from the signing key) over the object's name, the
writer that sent it and the SHA-256 of its bytes. A point's bytes are its whole manifest
(sequence number, the point it follows, writer, the backups and digests it names), so
a planted, changed, renamed or replayed object cannot carry a MAC that verifies. With
`encrypt`, the object's bytes are an envelope instead of the plaintext:

    dalio-sealed-1 key=5d0c2a9e41b7 writer=0a1b2c3d4e5f aead=AES-256-GCM\\n
    12-byte nonce, then the AES-256-GCM ciphertext and tag

with the header line and the object's name as associated data; the sidecar still
hashes the plaintext. Reads through a SealedStore return only bytes whose MAC (and
tag) verify; anything else is refused (IntegrityError 'not authenticated'), recorded
in backups/.refused-copies.json for `status`, and never installed. backups/ itself
is never sealed: it stays checkable with `sha256sum -c`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from . import log
from .errors import (
    IntegrityError,
    KeyUnavailable,
    MissingDependency,
    StoreUnreachable,
    UploadConflict,
)
from .formats import MAX_SIDECAR, SIDECAR_SUFFIX, parse_sidecar, sha256_hex
from .store import Store

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    from datetime import datetime
    from pathlib import Path
    from typing import Any

    from .keys import Key, Keyring, KeySource

MAC_TAG = "dalio-mac-1"
ENVELOPE_TAG = b"dalio-sealed-1 "
AEAD_NAME = "AES-256-GCM"
NOT_AUTHENTICATED = "not authenticated"
OVERHEAD = 256
"""The most an envelope adds to an object (header, nonce, tag): reads allow for it."""
REFUSED_RECORD = ".refused-copies.json"
_MAC_LINE = re.compile(r"# dalio-mac-1 key=([0-9a-f]{12}) writer=([0-9a-f]{12}) "
                       r"hmac-sha256=([0-9a-f]{64})\n")
_HEADER = re.compile(rb"dalio-sealed-1 key=([0-9a-f]{12}) writer=([0-9a-f]{12}) "
                     rb"aead=AES-256-GCM\n")


class NotAuthentic(Exception):
    """Why an object's signature does not hold (never leaves this module)."""


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
        raise NotAuthentic(f"it is signed with key {found[1]}, which the {ring.source} "
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
        raise NotAuthentic(f"it is encrypted with key {header[1].decode()}, which the "
                           f"{ring.source} does not hold (a wrong key, or a key rotated out)")
    body = data[header.end():]
    from cryptography.exceptions import InvalidTag
    try:
        return _aead(key).decrypt(body[:12], body[12:], header[0] + name.encode())
    except (InvalidTag, ValueError):
        raise NotAuthentic("it does not decrypt under its name (changed, renamed or "
                           "replayed under another name)") from None


class RefusedCopies:
    """backups/.refused-copies.json: the objects in mirrors and S3 refused as not
    authenticated, by store label, with why; what `status` reports. An entry goes when
    its object reads back authentic or a listing of its store no longer shows it.
    Written only when it changes: a healthy run never touches it."""

    def __init__(self, path: Path, durable: bool = True):
        self.path, self.durable = path, durable

    def load(self) -> dict[str, dict[str, str]]:
        import json
        try:
            doc = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def add(self, label: str, name: str, why: str) -> None:
        doc = self.load()
        if doc.get(label, {}).get(name) != why:
            doc.setdefault(label, {})[name] = why
            self._save(doc)

    def keep_only(self, label: str, present: Callable[[str], bool]) -> None:
        doc = self.load()
        gone = [n for n in doc.get(label, {}) if not present(n)]
        if gone:
            for name in gone:
                del doc[label][name]
            if not doc[label]:
                del doc[label]
            self._save(doc)

    def _save(self, doc: dict[str, dict[str, str]]) -> None:
        import json

        from .atomic import atomic_write, unlink_quietly
        try:
            if not doc:
                unlink_quietly(str(self.path))
            elif self.path.parent.is_dir():
                atomic_write(self.path, json.dumps(doc, indent=1, sort_keys=True).encode(),
                             durable=self.durable)
        except OSError as exc:
            log.error("cannot record refused copies in %s: %s", self.path, exc)


class SealedStore(Store):
    """A mirror or bucket whose objects are signed (and, with `encrypt`, encrypted) with
    the keys of `keys`; `writer()` is this machine's writer id. Reads return only
    authenticated plaintext; the Store contract is otherwise the inner store's."""

    def __init__(self, inner: Store, keys: KeySource, writer: Callable[[], str], *,
                 encrypt: bool = False, refused: RefusedCopies | None = None):
        self.inner, self.keys, self.writer, self.encrypt = inner, keys, writer, encrypt
        self.refused = refused
        self.max_bytes = inner.max_bytes
        inner.max_bytes += OVERHEAD  # an envelope is a little larger than its plaintext
        self._sidecar: tuple[str, bytes] | None = None

    def __getattr__(self, name: str) -> Any:  # remove, size, is_object, ensure, ...
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"SealedStore({self.inner!r})"

    @property
    def label(self) -> str:
        return self.inner.label

    def keyring(self) -> Keyring:
        """The keys; StoreUnreachable naming the key source when they cannot be had (the
        store's copies can then be neither made nor checked)."""
        try:
            return self.keys.keyring()
        except KeyUnavailable as exc:
            raise StoreUnreachable(f"cannot use the signed copies in {self.label}: {exc}"
                                   ) from None

    def list_names(self, prefix: str = "") -> list[str]:
        self.keyring()
        names = self.inner.list_names(prefix)
        if not prefix and self.refused is not None:
            present = set(names)
            self.refused.keep_only(self.label, present.__contains__)
        return names

    def scan(self) -> tuple[list[str], list[str]]:
        self.keyring()
        return self.inner.scan()

    def prepare(self) -> None:
        self.inner.prepare()

    def path(self, name: str) -> Path | None:
        return self.inner.path(name)

    def mtime(self, name: str) -> float | None:
        return self.inner.mtime(name)

    def written_at(self, name: str) -> datetime | None:
        self.keyring()
        return self.inner.written_at(name)

    def read(self, name: str, *, max_bytes: int | None = None) -> bytes | None:
        ring = self.keyring()
        if name.endswith(SIDECAR_SUFFIX):
            return self._read_sidecar(ring, name, max_bytes)
        data = self.inner.read(name, max_bytes=None if max_bytes is None
                               else max_bytes + OVERHEAD)
        if data is None:
            return None
        if max_bytes is not None and len(data) > max_bytes + OVERHEAD:
            raise IntegrityError("too large", f"{name} in {self.label} is larger than "
                                              f"{max_bytes} bytes")
        signed = self.inner.read(name + SIDECAR_SUFFIX, max_bytes=MAX_SIDECAR)
        if signed is None:
            raise IntegrityError("missing sidecar", f"{name} has no {SIDECAR_SUFFIX} "
                                                    "(incomplete)")
        try:
            sidecar, digest, _writer = open_sidecar(ring, name, signed)
            plain = unseal(ring, name, data) if is_sealed(data) else data
            if sha256_hex(plain) != digest:
                raise NotAuthentic("its bytes are not those its signature names (changed "
                                   "after it was signed)")
        except NotAuthentic as exc:
            raise self._refuse(name, str(exc)) from None
        self._sidecar = (name + SIDECAR_SUFFIX, sidecar)
        self._authentic(name)
        return plain

    def _read_sidecar(self, ring: Keyring, name: str, max_bytes: int | None) -> bytes | None:
        # fetch_verified reads the sidecar right after the object: no second request.
        if self._sidecar is not None and self._sidecar[0] == name:
            data, self._sidecar = self._sidecar[1], None
            return data
        signed = self.inner.read(name, max_bytes=max_bytes)
        if signed is None:
            return None
        try:
            return open_sidecar(ring, name[: -len(SIDECAR_SUFFIX)], signed)[0]
        except NotAuthentic as exc:
            self._refuse(name[: -len(SIDECAR_SUFFIX)], str(exc))
            return None  # an unsigned sidecar commits nothing: as if there were none

    def write(self, name: str, data: bytes) -> None:
        key = self.keyring().signing
        if name.endswith(SIDECAR_SUFFIX):
            try:
                payload = sign_sidecar(key, name[: -len(SIDECAR_SUFFIX)], self.writer(), data)
            except ValueError as exc:
                raise IntegrityError("malformed sidecar", f"{name}: {exc}") from None
        else:
            payload = seal(key, name, self.writer(), data) if self.encrypt else data
        try:
            self.inner.write(name, payload)
        except UploadConflict:
            if not self._holds(name, data):
                raise
            # The same content, sent before by another writer or under an older key.

    def _holds(self, name: str, data: bytes) -> bool:
        """Whether object `name` already holds `data`, authenticated."""
        ring = self.keyring()
        existing = self.inner.read(name)
        if existing is None:
            return False
        try:
            if name.endswith(SIDECAR_SUFFIX):
                return open_sidecar(ring, name[: -len(SIDECAR_SUFFIX)], existing)[0] == data
            return (unseal(ring, name, existing) if is_sealed(existing) else existing) == data
        except NotAuthentic:
            return False

    def _refuse(self, name: str, why: str) -> IntegrityError:
        log.error("refused %s in %s: %s", name, self.label, why)
        if self.refused is not None:
            self.refused.add(self.label, name, why)
        return IntegrityError(NOT_AUTHENTICATED, f"{name} in {self.label}: {why}")

    def _authentic(self, name: str) -> None:
        if self.refused is not None:
            self.refused.keep_only(self.label, lambda n: n != name)


def seal_stores(mirrors: dict[str, Store], cloud: Store | None, sealing: Sealing | None,
                writer: Callable[[], str], backup_dir: Path, durable: bool = True
                ) -> tuple[dict[str, Store], Store | None]:
    """The mirrors and the bucket, signed with `sealing`'s keys (as they are without)."""
    if sealing is None:
        return mirrors, cloud
    refused = RefusedCopies(backup_dir / REFUSED_RECORD, durable)

    def sealed(store: Store) -> Store:
        return SealedStore(store, sealing.keys, writer, encrypt=sealing.encrypt,
                           refused=refused)

    return {t: sealed(s) for t, s in mirrors.items()}, cloud and sealed(cloud)


class Sealing:
    """What config.yaml says about keys: where they are, and whether to encrypt."""

    def __init__(self, keys: KeySource, encrypt: bool = False):
        self.keys, self.encrypt = keys, encrypt

    def __repr__(self) -> str:
        return f"Sealing({self.keys.label!r}, encrypt={self.encrypt})"


def refused_copies(backup_dir: Path) -> list[dict[str, str]]:
    """The refused objects recorded in `backup_dir`: store, name, why."""
    doc = RefusedCopies(backup_dir / REFUSED_RECORD).load()
    return [{"store": label, "name": name, "why": why}
            for label, names in sorted(doc.items()) if isinstance(names, dict)
            for name, why in sorted(names.items())]


def signed(store: Store) -> bool:
    return isinstance(store, SealedStore)
