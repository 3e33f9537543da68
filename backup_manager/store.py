"""The Store contract: what every place that holds backups offers.

`backups/`, a mirror folder (both LocalStore) and an S3 bucket (S3Store) offer
the same calls, so listing, verification, restore and copies are written once
over all of them. tests/test_stores.py runs one suite against each store.

Names are plain file names: never '/' or NUL. A store never changes an object
once written.
"""

from __future__ import annotations

from datetime import datetime

from .errors import IntegrityError
from .formats import MAX_SIDECAR, SIDECAR_SUFFIX, parse_sidecar, sha256_hex

MAX_STATE_BYTES = 16 * 1024 * 1024
"""The default bound of every read (backup.max_state_bytes): DalioLite's state files are
under 1 KiB, so 16 MiB is a wide margin, and an object planted larger is never read."""

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    from pathlib import Path


class Store:
    """The contract; LocalStore and S3Store implement it.

    Errors: a store that cannot answer raises StoreUnreachable (CloudError for a
    bucket); callers must treat that as "cannot see", never as "empty". A write
    that finds other bytes under the name raises UploadConflict.
    """

    @property
    def label(self) -> str:
        """Where the store is, for people: a folder path or s3://bucket/prefix."""
        raise NotImplementedError

    def list_names(self, prefix: str = "") -> list[str]:
        """Names of objects starting with `prefix`, in no particular order, hidden ones
        included; [] when the store is empty, or is a folder not made yet inside a parent
        that exists. Objects only: a folder lists no symlink or sub-folder, S3 no key
        that is not a plain name. Raises StoreUnreachable when the store cannot be
        listed (a folder whose parent is missing: not mounted)."""
        raise NotImplementedError

    def scan(self) -> tuple[list[str], list[str]]:
        """(names of objects, names of entries that are not objects: symlinks and
        folders); ([], []) when the store is empty or does not exist yet."""
        raise NotImplementedError

    max_bytes: int = MAX_STATE_BYTES
    """The store's bound on every read: an object larger than this is never read."""

    def read(self, name: str, *, max_bytes: int | None = None) -> bytes | None:
        """The object's bytes; None if it does not exist (or is no regular file). Never
        more than the store's bound: an object the store reports larger than
        `self.max_bytes` (its size before any byte is read) raises IntegrityError (kind
        'too large') unread, and one that grows past it while read raises the same.
        With a smaller `max_bytes`, at most max_bytes + 1 bytes, so a caller sees that
        it is larger. Raises IntegrityError (kind 'checksum mismatch') when the store itself
        finds the bytes damaged, StoreUnreachable when it cannot be read."""
        raise NotImplementedError

    def write(self, name: str, data: bytes) -> None:
        """Store `data` under `name` atomically. Idempotent: the same bytes already
        there is success; other bytes raise UploadConflict and are never overwritten."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Make the store ready to receive writes; raises StoreUnreachable when it cannot be
        (a mirror folder whose parent is missing: a drive not mounted)."""
        raise NotImplementedError

    def path(self, name: str) -> Path | None:
        """Where the object is on this machine; None for a remote store."""
        raise NotImplementedError

    def mtime(self, name: str) -> float | None:
        """When the object was last written (seconds since the epoch); None if it is
        missing or the store does not say."""
        raise NotImplementedError

    def written_at(self, name: str) -> datetime | None:
        """When the object was written by the store's own account (S3: LastModified, S3's
        clock; a folder: the file's mtime), UTC; None if it is missing. Raises
        StoreUnreachable when the store cannot be asked."""
        raise NotImplementedError


def too_large(store: Store, name: str, size: int) -> IntegrityError:
    """The error for an object over the store's bound, naming it and both sizes."""
    return IntegrityError("too large", f"{name} in {store.label} is {size:,} bytes, over "
                                       f"the {store.max_bytes:,}-byte bound "
                                       "(backup.max_state_bytes); not read")


def fetch_verified(store: Store, name: str, *, max_bytes: int | None = None) -> bytes:
    """The bytes of backup `name` in `store`, checked against its sidecar; with
    `max_bytes`, never more than that is read.

    Raises IntegrityError whose `kind` names the problem: 'missing backup',
    'too large', 'missing sidecar', 'malformed sidecar' or 'checksum mismatch'.
    """
    data = store.read(name, max_bytes=max_bytes)
    if data is None:
        raise IntegrityError("missing backup", f"{name} is not in {store.label}")
    if max_bytes is not None and len(data) > max_bytes:
        raise IntegrityError("too large", f"{name} in {store.label} is larger than "
                                          f"{max_bytes} bytes")
    sidecar = store.read(name + SIDECAR_SUFFIX, max_bytes=MAX_SIDECAR)
    if sidecar is None:
        raise IntegrityError("missing sidecar", f"{name} has no {SIDECAR_SUFFIX} (incomplete)")
    try:
        expected = parse_sidecar(sidecar, name)
    except ValueError as exc:
        raise IntegrityError("malformed sidecar", str(exc)) from None
    if sha256_hex(data) != expected:
        raise IntegrityError("checksum mismatch", f"{name} does not match its sidecar")
    return data
