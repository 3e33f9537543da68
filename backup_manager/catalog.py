"""The catalogue: which backups of which state file a store holds, in order.

Everything here works from names alone (no stat, no read), so ten thousand
backups cost milliseconds; reading a backup happens only where one is needed
(`read_valid`).
"""

from __future__ import annotations

import re
from collections import namedtuple
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta

from .content import validate_content
from .formats import (
    MAX_SIDECAR,
    SIDECAR_SUFFIX,
    STAMP_SHAPE,
    BackupName,
    StateKey,
    backup_from_stamp,
    parse_any_backup_name,
    parse_sidecar,
    stamp_time,
)
from .store import fetch_verified

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:

    from .store import Store


class BackupInfo(namedtuple("BackupInfo", "name path timestamp size complete location",
                            defaults=("local",))):
    """One backup as listed: name, path (None when remote), timestamp (the aware UTC
    instant in its name), size, complete (has its sidecar), location."""

    __slots__ = ()


class BackupSet:
    """The backups of one state file in one store.

    Iterating yields (BackupName, complete) newest first, building each BackupName
    only when reached, so a restore that stops at the newest valid backup never
    pays for the thousands behind it.
    """

    __slots__ = ("key", "stamps", "complete_stamps", "orphan_sidecars")

    def __init__(self, key: StateKey, stamps: list[str], sidecar_stamps: set[str]):
        self.key = key
        present = set(stamps)
        self.complete_stamps = sidecar_stamps & present
        self.stamps = _newest_first(stamps)
        self.orphan_sidecars = [self.name_of(t) + SIDECAR_SUFFIX
                                for t in sorted(sidecar_stamps - present)]

    def __iter__(self) -> Iterator[tuple[BackupName, bool]]:
        for stamp in self.stamps:
            backup = backup_from_stamp(*self.key, stamp)
            if backup is not None:
                yield backup, stamp in self.complete_stamps

    def __len__(self) -> int:
        return len(self.stamps)

    @property
    def newest_stamp(self) -> str | None:
        """The newest new-style stamp (complete or not): the next backup's floor."""
        return self.stamps[0] if self.stamps and self.stamps[0].endswith("Z") else None

    def name_of(self, stamp: str) -> str:
        return f"{self.key.stem}_{stamp}{self.key.suffix}"

    def with_backup(self, stamp: str) -> BackupSet:
        """This set plus one complete backup stamped `stamp`, its newest (next_stamp)."""
        grown = BackupSet(self.key, [], set())
        grown.stamps = [stamp, *self.stamps]
        grown.complete_stamps = self.complete_stamps | {stamp}
        grown.orphan_sidecars = self.orphan_sidecars
        return grown

    def complete(self) -> Iterator[BackupName]:
        """Backups with a sidecar, newest first (a name whose date cannot exist is left out)."""
        return (b for b, complete in self if complete)

    def incomplete(self) -> list[BackupName]:
        """Backups without a sidecar, newest first; only these names are parsed."""
        found = (backup_from_stamp(*self.key, t) for t in self.stamps
                 if t not in self.complete_stamps)
        return [b for b in found if b is not None]

    def retention_records(self) -> list[tuple[str, datetime]]:
        """(name, UTC instant) of each complete backup, newest first: what retention
        plans with, built from the stamps without a BackupName each."""
        records = []
        for stamp in self.stamps:
            if stamp in self.complete_stamps:
                try:
                    records.append((self.name_of(stamp), stamp_time(stamp)))
                except ValueError:
                    continue
        return records


def read_valid(store: Store, backup: BackupName) -> bytes:
    """The backup's bytes, matching its sidecar and valid as its state file's content.

    Raises IntegrityError or InvalidStateError for a bad backup, OSError or
    CloudError when the store cannot be read.
    """
    data = fetch_verified(store, backup.name)
    validate_content(backup.stem + backup.suffix, data)
    return data


def first_valid(store: Store, newest_first: Iterable[BackupName]) -> BackupName | None:
    """The first backup that reads back valid; unreadable ones are passed over."""
    from .errors import IntegrityError, InvalidStateError

    for backup in newest_first:
        try:
            read_valid(store, backup)
            return backup
        except (IntegrityError, InvalidStateError, OSError):
            continue
    return None


def sidecar_digest(store: Store, name: str) -> str | None:
    """The digest backup `name`'s sidecar records; None if it has none or it is malformed."""
    from .errors import IntegrityError

    try:
        sidecar = store.read(name + SIDECAR_SUFFIX, max_bytes=MAX_SIDECAR)
        return None if sidecar is None else parse_sidecar(sidecar, name)
    except (ValueError, OSError, IntegrityError):
        return None


def backup_holding(store: Store, key: StateKey, digest: str) -> str | None:
    """The newest complete backup of `key` whose sidecar records `digest`, or None."""
    for backup in backups_of(store, key).complete():
        if sidecar_digest(store, backup.name) == digest:
            return backup.name
    return None


def backups_of(store: Store, key: StateKey) -> BackupSet:
    """The backups of one state file in `store` (empty when it has none)."""
    return group_backups(store.list_names(key.stem + "_"), [key]).get(key) or \
        BackupSet(key, [], set())


def backup_sets(store: Store, keys: list[StateKey] | None = None) -> dict[StateKey, BackupSet]:
    """The backups in `store` of the given state files (None: of every state file)."""
    prefix = keys[0].stem + "_" if keys and len(keys) == 1 else ""
    return group_backups(store.list_names(prefix), keys)


def group_backups(names: Iterable[str], keys: list[StateKey] | None
                  ) -> dict[StateKey, BackupSet]:
    """Group backup and sidecar names by state file, from names alone.

    The names are joined once and each state file's backups are found with one
    regular-expression scan anchored on the whole name.
    """
    names = list(names)
    if keys is None:
        keys = sorted({StateKey(p.stem, p.suffix) for p in map(_any_backup, names) if p})
    text = "\0" + "\0".join(names) + "\0"
    sets = {}
    for key in keys:
        stamps, sidecars = _stamps_in(text, StateKey(*key))
        if stamps or sidecars:
            sets[StateKey(*key)] = BackupSet(StateKey(*key), stamps, sidecars)
    return sets


def next_stamp(backups: BackupSet, now: datetime, is_object: Callable[[str], bool]
               ) -> datetime:
    """When to stamp a new backup among `backups`: `now`, or just after the newest
    new-style stamp when the clock is behind it, so name order stays creation order
    whatever the clock does (promise 9). Only names that `is_object` are counted: a
    folder or symlink planted at a future name must not drag every later stamp along."""
    for stamp in backups.stamps:
        if not stamp.endswith("Z"):
            break  # legacy names sort after every new-style one
        try:
            when = stamp_time(stamp)
        except ValueError:
            continue  # a name whose date cannot exist (Feb 30) is no backup
        if is_object(backups.name_of(stamp)):
            return max(now, when + timedelta(microseconds=1))
    return now


def state_files_in(names: Iterable[str]) -> list[str]:
    """File names (stem + suffix) of every state file with backups among `names`."""
    return sorted(key.file_name for key in group_backups(names, None))


def sidecar_time(sidecar: str) -> datetime | None:
    """The instant in an (orphan) sidecar's name, or None."""
    parsed = parse_any_backup_name(sidecar[: -len(SIDECAR_SUFFIX)])
    return parsed.when if parsed else None


def _any_backup(name: str) -> BackupName | None:
    if name.endswith(SIDECAR_SUFFIX):
        name = name[: -len(SIDECAR_SUFFIX)]
    return parse_any_backup_name(name)


def _stamps_in(text: str, key: StateKey) -> tuple[list[str], set[str]]:
    """(stamps of backups, stamps of sidecars) of one state file in the joined names.

    The scan only checks the shape of each stamp; the calendar is checked when a
    backup is reached, so it is paid for the few looked at.
    """
    # NUL never occurs in a file name: it marks where each name starts and ends.
    found = re.findall(f"\0{re.escape(key.stem)}_({STAMP_SHAPE}){re.escape(key.suffix)}"
                       f"({re.escape(SIDECAR_SUFFIX)})?(?=\0)", text)
    return [t for t, side in found if not side], {t for t, side in found if side}


def _newest_first(stamps: list[str]) -> list[str]:
    """Stamps in creation order, newest first: new-style stamps by their text (they are
    fixed-width UTC and never go back, promise 9), then the original module's legacy
    stamps, also by their text. No time-zone conversion, so a folder moved to a
    machine in another zone keeps its order."""
    new = [t for t in stamps if t.endswith("Z")]
    if len(new) == len(stamps):
        return sorted(stamps, reverse=True)
    legacy = [t for t in stamps if not t.endswith("Z")]
    return sorted(new, reverse=True) + sorted(legacy, reverse=True)
