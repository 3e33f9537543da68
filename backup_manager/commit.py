"""Committing a restore point: the state files as they stand, in one manifest.

The caller holds the backups folder's lock. Each state file's entry names a
complete backup holding exactly its live bytes (one is made when none does); a
file that is missing or invalid keeps the entry it had (a lost file is never
recorded as gone: only a deliberate fresh start clears an entry). The point is
created exclusively under the next number, owed to every copy target before its
sidecar makes it complete, and follows the newest point this folder holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path

from . import log
from .atomic import read_state_file
from .catalog import BackupSet, group_backups, next_stamp, sidecar_digest
from .content import validate_content
from .errors import IntegrityError, InvalidStateError, storage_error
from .formats import SIDECAR_SUFFIX, sha256_hex, state_key
from .points import CARRIED, Entry, Point, encode_point, point_name, points_in, read_point

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    from typing import Any

    from .folder import BackupsFolder


def newest_local_point(folder: BackupsFolder, names: list[str]) -> tuple[Point | None, int]:
    """(the newest point in backups/ that reads back valid, the highest number there)."""
    complete, incomplete = points_in(names)
    highest = max(complete | incomplete, default=0)
    for number in sorted(complete, reverse=True):
        try:
            return read_point(folder.store, number), highest
        except (IntegrityError, InvalidStateError) as exc:
            log.warning("restore point %s is damaged: %s", point_name(number), exc)
    return None, highest


def commit_point(folder: BackupsFolder, state_files: Iterable[Path], *, writer: str,
                 kind: str, reason: str, record: Callable[[str], None],
                 details: Mapping[str, Any] | None = None,
                 made: Mapping[str, tuple[str, str, datetime]] = {},
                 fresh: Iterable[str] = (), seen: int = 0, force: bool = False,
                 names: list[str] | None = None, follows: Point | None = None,
                 publish: Callable[[Point, bytes], Iterable[str]] | None = None
                 ) -> Point | None:
    """Commit a point of the state files as they stand; None when nothing changed since
    the newest point (unless `force`). `made` maps file names to (name, SHA-256, clock
    reading) of the backup just made of them; `fresh` names files started over on
    purpose (entry cleared); `seen` is the highest number seen in any other store;
    `record(name)` owes the point to every copy target; `names`, a fresh listing of
    backups/ when the caller has one (taken under the same lock hold). `follows` is the
    point it follows when not this folder's newest (a take-over follows another
    writer's). `publish(point, data)` creates it elsewhere first (a claim) and returns
    the targets it reached: those are not owed it."""
    names = folder.store.list_names() if names is None else names
    newest, highest = newest_local_point(folder, names)
    base = follows if follows is not None else newest
    files: dict[str, Entry | None] = dict(base.files) if base else {}
    for path in state_files:
        file_name = path.name
        entry = _entry_of(folder, path, names, files.get(file_name), made.get(file_name),
                          record)
        if entry is not None:
            files[file_name] = entry
    for file_name in fresh:
        files[file_name] = None
    if not force and base is not None and _digests(files) == _digests(base.files) and \
            all(base.details.get(k) == v for k, v in (details or {}).items() if k in CARRIED):
        return None  # the same bytes, perhaps under a newer backup's name: no change
    carried = {k: base.details[k] for k in CARRIED if base and k in base.details}
    point = Point(max(highest, seen, base.sequence if base else 0) + 1, folder.clock(), writer,
                  kind, reason, None if base is None else (base.sequence, base.digest), files,
                  {**carried, **(details or {})})
    data = encode_point(point)
    point.digest = sha256_hex(data)
    reached = set(publish(point, data)) if publish is not None else set()
    try:
        folder.store.create_object(point.name, data, before_commit=lambda name: record(
            name, skip=reached) if reached else record(name))
    except OSError as exc:
        raise storage_error(exc, f"cannot write restore point {point.name} in "
                                 f"{folder.root}") from None
    log.info("committed restore point %d (%s): %s", point.sequence, kind, reason)
    return point


def _entry_of(folder: BackupsFolder, path: Path, names: list[str], had: Entry | None,
              made: tuple[str, str, datetime] | None, record: Callable[[str], None]
              ) -> Entry | None:
    """The entry for the live file at `path`; None to keep what the point had (the file
    is missing or invalid)."""
    try:
        live, mode = read_state_file(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise storage_error(exc, f"cannot read {path}") from None
    try:
        validate_content(path.name, live)
    except InvalidStateError:
        return None
    digest = sha256_hex(live)
    if made is not None and made[1] == digest:
        return Entry(*made)
    if had is not None and had.sha256 == digest and had.backup in names and \
            had.backup + SIDECAR_SUFFIX in names:
        return had
    key = state_key(path)
    backups = group_backups(names, [key]).get(key) or BackupSet(key, [], set())
    newest = next(backups.complete(), None)
    # Only the newest backup may stand for the live bytes: an older one holding them
    # means the file went back (a restore), and the history records that as new.
    if newest is not None and sidecar_digest(folder.store, newest.name) == digest and \
            _holds(folder, newest.name, live):
        return Entry(newest.name, digest)
    now = folder.clock()
    when = next_stamp(backups, now, folder.store.is_object)
    try:
        name = folder.store.create_backup(*key, live, mode, when, before_commit=record)
    except OSError as exc:
        raise storage_error(exc, f"cannot back up {path} in {folder.root}") from None
    log.warning("%s held bytes no backup held: backed up now as %s", path, name)
    return Entry(name, digest, now)


def _holds(folder: BackupsFolder, name: str, live: bytes) -> bool:
    try:
        return folder.store.read(name) == live
    except IntegrityError:  # too large to read, or damaged: not these bytes
        return False


def _digests(files: Mapping[str, Entry | None]) -> dict[str, str | None]:
    return {name: None if entry is None else entry.sha256 for name, entry in files.items()}
