"""Install: make a state file hold a chosen backup, atomically, keeping what it
replaces (a valid file no backup holds under backups/replaced/, an invalid one under
backups/corrupt/), and put back the restore point it came from; a deliberate fresh
start moves backups aside, never deletes them."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from . import log
from .atomic import atomic_write, file_mode, fsync_dir, read_state_file
from .catalog import backups_of, sidecar_digest
from .content import is_valid_content
from .errors import IntegrityError, StoreUnreachable, UploadConflict, storage_error
from .folder import CORRUPT_DIR, REPLACED_DIR, BackupsFolder
from .formats import SIDECAR_SUFFIX, sha256_hex, sidecar_text, state_key
from .points import Point
from .restore import Candidate, RestoreResult

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    from .formats import BackupName, StateKey
    from .store import Store


def install(folder: BackupsFolder, path: Path, chosen: Candidate, *, dry_run: bool,
            skipped: list[tuple[str, str]], rehearsal: bool = False,
            point: Point | None = None,
            point_from: tuple[Store, bytes] | None = None) -> RestoreResult:
    """Make `path` hold the chosen backup, keeping what it replaces. A `rehearsal`
    (drill) writes the file only: nothing in backups/ is taken, kept or put back.
    The restore point it came from (`point`; `point_from`: the store it was read from
    and its manifest's bytes) is put back
    into backups/ too when it is not there."""
    location, store, backup, data = chosen
    result = dict(name=backup.name, path=store.path(backup.name), timestamp=backup.when,
                  size=len(data), complete=True, location=location, skipped=tuple(skipped))
    live = read_live(path)
    if live == data:
        log.info("%s already holds backup %s; nothing to change", path, backup.name)
        return RestoreResult(**result, changed=False)
    replaced = None if live is None else (
        "valid" if is_valid_content(path.name, live) else "invalid")
    if dry_run:
        return RestoreResult(**result, replaced=replaced)
    if rehearsal:
        _write_state(path, data, store, backup, durable=False)
        return RestoreResult(**result, replaced=replaced)
    with folder.locked():
        live = read_live(path)
        kept_as = None
        try:
            if live is not None and live != data:
                kept_as = keep_replaced(folder, path, live)
            if location != "local":
                _put_back(folder, backup.name, data)
            if point is not None and point_from is not None and \
                    point_from[0] is not folder.store:
                put_back_point(folder, point, point_from[1])
            _write_state(path, data, store, backup, durable=folder.durable)
        except OSError as exc:
            raise storage_error(exc, f"cannot restore {path}") from None
    log.info("restored %s from %s (%s)", path, backup.name, store.label)
    return RestoreResult(**result, replaced=replaced, kept_as=kept_as)


def keep_replaced(folder: BackupsFolder, path: Path, live: bytes) -> str | None:
    """Keep the file a restore replaces, outside what restore picks from: a valid one
    under backups/replaced/ (unless a backup already holds its bytes), an invalid one
    under backups/corrupt/. Returns where it went, relative to backups/."""
    key = state_key(path)
    if not is_valid_content(path.name, live):
        kept = folder.keep_aside(CORRUPT_DIR, key, live, file_mode(path))
        log.warning("kept the invalid %s as %s", path, kept)
        return kept
    held_by = verified_holder(folder.store, key, live)
    if held_by is not None:
        log.info("the replaced %s is held by backup %s", path, held_by)
        return None
    kept = folder.keep_aside(REPLACED_DIR, key, live, file_mode(path))
    log.warning("kept the replaced %s as %s", path, kept)
    return kept


def verified_holder(store: Store, key: StateKey, data: bytes) -> str | None:
    """The newest complete backup of `key` in `store` whose bytes are exactly `data`
    (read and compared: a sidecar alone proves nothing about damaged bytes)."""
    digest = sha256_hex(data)
    for backup in backups_of(store, key).complete():
        if sidecar_digest(store, backup.name) == digest:
            try:
                if store.read(backup.name) == data:
                    return backup.name
            except IntegrityError:
                continue  # too large to read, or damaged: it holds other bytes
            except StoreUnreachable:
                return None
    return None


def _write_state(path: Path, data: bytes, store: Store, backup: BackupName, *,
                 durable: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data, durable=durable, mode=_backup_mode(store, backup))


def quarantine(folder: BackupsFolder, path: Path) -> list[str]:
    """Move every local backup of one state file, and the live file if invalid, into
    backups/corrupt/: a deliberate fresh start, never a deletion."""
    key = state_key(path)
    moved = []
    with folder.locked():
        corrupt = folder.root / CORRUPT_DIR
        try:
            corrupt.mkdir(mode=0o700, exist_ok=True)
            backups = backups_of(folder.store, key)
            names = [n for b, _ in backups for n in (b.name + SIDECAR_SUFFIX, b.name)]
            for name in names + backups.orphan_sidecars:
                if folder.store.is_object(name):
                    os.replace(folder.root / name, corrupt / name)
                    moved.append(f"{CORRUPT_DIR}/{name}")
            live = read_live(path)
            if live is not None and not is_valid_content(path.name, live):
                moved.append(folder.keep_aside(CORRUPT_DIR, key, live, file_mode(path)))
                path.unlink()
            if folder.durable:
                fsync_dir(corrupt)
                fsync_dir(folder.root)
        except OSError as exc:
            raise storage_error(exc, f"cannot move backups of {path} aside") from None
    for name in moved:
        log.warning("moved %s aside for a fresh start of %s", name, path)
    return moved


def read_live(path: Path) -> bytes | None:
    """The state file's bytes; None when it is missing, b"" (invalid content) when it
    is no regular file (a FIFO or device: never opened for reading)."""
    try:
        return read_state_file(path)[0]
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.EINVAL and not path.is_dir():
            return b""
        raise storage_error(exc, f"cannot read {path}") from None


def _put_back(folder: BackupsFolder, name: str, data: bytes) -> None:
    # A backup fetched from elsewhere becomes local again, sidecar last.
    try:
        folder.store.write(name, data)
        folder.store.write(name + SIDECAR_SUFFIX, sidecar_text(sha256_hex(data), name))
    except (UploadConflict, OSError) as exc:
        log.error("could not put %s back into %s: %s", name, folder.root, exc)


def put_back_point(folder: BackupsFolder, point: Point, data: bytes) -> None:
    """Copy a restore point read (and verified) from another store into backups/,
    sidecar last."""
    if not folder.store.is_object(point.name + SIDECAR_SUFFIX):
        _put_back(folder, point.name, data)


def _backup_mode(store: Store, backup: BackupName) -> int | None:
    where = store.path(backup.name)
    return None if where is None else file_mode(where, follow_symlinks=False, default=None)
