"""The outbox: a crash-safe queue of copies still owed to mirrors and the cloud.

One small JSON file per (target, backup) under ``backups/.outbox/{target}/``,
written before the upload starts and removed once it is done, so a kill at any
instant leaves the work recorded. Each file is replaced atomically; two
processes draining the same entry upload the same bytes, which the stores
accept as idempotent.
"""

from __future__ import annotations

import os
from collections import namedtuple
from datetime import UTC, datetime
from pathlib import Path

from .atomic import atomic_write, read_state_file, unlink_quietly
from .formats import TEMP_MARK

_ENTRY = ".json"
_LAST_SUCCESS = "last-success"
_IDENTITY = "target"
"""Which store a target's queue belongs to (its label and endpoint), as text."""


class PendingCopy(namedtuple("PendingCopy", "target name queued_at attempts last_error conflict")):
    """One copy owed: target id, backup name, when it was queued (aware UTC), attempts
    so far, the last error, and whether the remote holds other bytes (never retried)."""

    __slots__ = ()


class Outbox:
    def __init__(self, root: Path, *, durable: bool = True):
        self.root = Path(root)
        self.durable = durable

    def _entry(self, target: str, name: str) -> Path:
        return self.root / target / (name + _ENTRY)

    def add(self, target: str, name: str) -> None:
        """Record that `name` is owed to `target`; keeps an existing entry as it is."""
        path = self._entry(target, name)
        if path.exists():
            return
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._write(path, _now(), 0, None, False)

    def failed(self, copy: PendingCopy, error: str, *, conflict: bool = False) -> None:
        self._write(self._entry(copy.target, copy.name), copy.queued_at, copy.attempts + 1,
                    error, conflict)

    def done(self, target: str, name: str) -> None:
        unlink_quietly(os.fspath(self._entry(target, name)))
        marker = self.root / target / _LAST_SUCCESS
        try:
            marker.touch()
        except OSError:
            pass

    def forget(self, target: str, name: str) -> None:
        """Drop a copy owed, on purpose (the operator's `sync --forget`): no success."""
        unlink_quietly(os.fspath(self._entry(target, name)))

    def identity(self, target: str) -> str | None:
        """The identity `target`'s queue was recorded under; None when none was (a queue
        from before identities, or no queue yet)."""
        try:
            return read_state_file(self.root / target / _IDENTITY)[0].decode()
        except (OSError, UnicodeDecodeError):
            return None

    def belongs(self, target: str, identity: str) -> bool:
        """Whether `target`'s queue (pending copies, last success, errors) is that of
        the store `identity` names; a queue recorded under no identity is."""
        return self.identity(target) in (None, identity)

    def claim(self, target: str, identity: str) -> None:
        """Make `target`'s queue that of `identity`. A queue recorded under another
        identity (a bucket renamed, a mistyped one fixed) is that store's, not this
        one's: it moves aside as `{target}-{hash}` (what it still owes shows as owed to
        a target no longer configured), and a queue set aside earlier for `identity`
        comes back; so a changed target starts with no history."""
        folder = self.root / target
        recorded = self.identity(target)
        if recorded == identity:
            return
        if recorded is not None:
            os.replace(folder, self.root / aside_name(target, recorded))
            kept = self.root / aside_name(target, identity)
            if kept.is_dir():
                os.replace(kept, folder)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(folder / _IDENTITY, identity.encode(), durable=self.durable, mode=0o600)

    def last_success(self, target: str) -> datetime | None:
        try:
            mtime = (self.root / target / _LAST_SUCCESS).stat().st_mtime
        except OSError:
            return None
        return datetime.fromtimestamp(mtime, UTC)

    def pending(self, target: str | None = None) -> list[PendingCopy]:
        """Entries of one target (or all), oldest backup first."""
        targets = [target] if target else self._targets()
        copies = []
        for t in targets:
            try:
                names = os.listdir(self.root / t)
            except (FileNotFoundError, NotADirectoryError):
                continue
            for file_name in names:
                if file_name.endswith(_ENTRY) and TEMP_MARK not in file_name:
                    copy = self._read(t, file_name[: -len(_ENTRY)])
                    if copy is not None:
                        copies.append(copy)
        copies.sort(key=lambda c: (c.queued_at, c.name))
        return copies

    def pending_names(self) -> set[str]:
        return {c.name for c in self.pending()}

    def _targets(self) -> list[str]:
        try:
            return sorted(e.name for e in os.scandir(self.root) if e.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            return []

    def _read(self, target: str, name: str) -> PendingCopy | None:
        import json

        path = self._entry(target, name)
        try:
            doc = json.loads(read_state_file(path)[0])  # never blocks on a FIFO
            queued = datetime.fromisoformat(doc["queued_at"])
            return PendingCopy(target, name, queued, int(doc.get("attempts", 0)),
                               doc.get("last_error"), bool(doc.get("conflict", False)))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, OSError):
            # A damaged entry still means work is owed; retry it as new.
            mtime = datetime.fromtimestamp(_mtime(path), UTC)
            return PendingCopy(target, name, mtime, 0, "outbox entry was unreadable", False)

    def _write(self, path: Path, queued: datetime, attempts: int, error: str | None,
               conflict: bool) -> None:
        import json

        doc = {"queued_at": queued.isoformat(), "attempts": attempts, "last_error": error,
               "conflict": conflict}
        atomic_write(path, json.dumps(doc).encode(), durable=self.durable, mode=0o600)


def aside_name(target: str, identity: str) -> str:
    """Where the queue of `target` recorded under `identity` goes when set aside."""
    from .formats import sha256_hex

    return f"{target}-{sha256_hex(identity.encode())[:12]}"


def _now() -> datetime:
    return datetime.now(UTC)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
