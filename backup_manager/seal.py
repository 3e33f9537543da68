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

from collections.abc import Callable

from . import log
from .envelope import (
    NOT_AUTHENTICATED,
    OVERHEAD,
    UNKNOWN_KEY,
    NotAuthentic,
    UnknownKey,
    is_sealed,
    open_sidecar,
    seal,
    sign_sidecar,
    unseal,
)
from .errors import (
    IntegrityError,
    KeyUnavailable,
    StoreUnreachable,
    UploadConflict,
)
from .formats import MAX_SIDECAR, SIDECAR_SUFFIX, sha256_hex
from .store import Store

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    from datetime import datetime
    from pathlib import Path
    from typing import Any

    from .keys import Keyring, KeySource

REFUSED_RECORD = ".refused-copies.json"


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
            raise self._refuse(name, str(exc), UNKNOWN_KEY if isinstance(exc, UnknownKey)
                               else NOT_AUTHENTICATED) from None
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

    def _refuse(self, name: str, why: str, kind: str = NOT_AUTHENTICATED) -> IntegrityError:
        log.error("refused %s in %s: %s", name, self.label, why)
        if self.refused is not None:
            self.refused.add(self.label, name, why)
        return IntegrityError(kind, f"{name} in {self.label}: {why}")

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


def unsealed(store: Store) -> Store:
    """The store a signed one wraps (the bucket itself, for what only it can say: its
    Object Lock); any other store as it is."""
    return store.inner if isinstance(store, SealedStore) else store
