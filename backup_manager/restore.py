"""Restore: find the newest valid backup of a state file, then install it.

Nothing becomes visible before the backup matched its sidecar and its content
was valid; the live file is replaced atomically, and what it held is kept
(a valid file as a backup, an invalid one under backups/corrupt/).
"""

from __future__ import annotations

import os
from collections import namedtuple
from collections.abc import Iterable, Mapping
from pathlib import Path

from . import log
from .atomic import atomic_write, file_mode, fsync_dir, read_state_file
from .catalog import backups_of, read_valid
from .copies import CLOUD_TARGET
from .errors import CloudError, IntegrityError, InvalidStateError, UploadConflict, storage_error
from .folder import CORRUPT_DIR, BackupsFolder
from .formats import SIDECAR_SUFFIX, is_valid_content, sha256_hex, sidecar_text, state_key

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    from .formats import BackupName, StateKey
    from .store import Store

_FIELDS = "name path timestamp size complete location"


class RestoreResult(namedtuple("RestoreResult", _FIELDS + " changed replaced kept_as skipped",
                               defaults=("local", True, None, None, ()))):
    """The backup restore chose (BackupInfo's fields), and what it did: `changed` is False
    when the file already held it; `replaced` is None, "valid" or "invalid"; `kept_as`
    is where the replaced file went; `skipped` lists (backup, why) passed over."""

    __slots__ = ()


class Candidate(namedtuple("Candidate", "location store backup data")):
    """A backup that matched its sidecar and holds valid content, with its bytes."""

    __slots__ = ()


class Search:
    """What a search looked at: for the error message and as start-up evidence.

    `unreachable` maps each location that could not be listed or read to why.
    """

    def __init__(self) -> None:
        self.tried: list[tuple[str, str]] = []
        self.found = 0
        self.unreachable: dict[str, str] = {}

    def cannot_ask(self, location: str, store: Store, why: str) -> None:
        self.tried.append((store.label, why))
        self.unreachable.setdefault(location, why)

    def unreachable_clouds(self, stores: Mapping[str, Store]) -> list[str]:
        return [stores[loc].label for loc in self.unreachable if loc == CLOUD_TARGET]

    def summary(self) -> str:
        if not self.tried:
            return "nothing to try"
        more = len(self.tried) - 10
        return "; ".join(f"{what}: {why}" for what, why in self.tried[:10]) + (
            f"; and {more} more" if more > 0 else "")


def find_newest_valid(sources: Iterable[tuple[str, Store]], key: StateKey, prefix: str | None,
                      skip: Mapping[str, str], search: Search) -> Candidate | None:
    """The first store's newest valid backup (timestamp starting with `prefix`), in
    the order of `sources`, passing over damaged ones; None when there is none.
    Stores in `skip` (location -> why) are not asked."""
    for location, store in sources:
        if location in skip:
            search.cannot_ask(location, store, "not asked again: " + skip[location])
            continue
        found = _newest_valid_in(location, store, key, prefix, search)
        if found is not None:
            return found
    return None


def _newest_valid_in(location: str, store: Store, key: StateKey, prefix: str | None,
                     search: Search) -> Candidate | None:
    try:
        backups = backups_of(store, key)
    except (CloudError, OSError) as exc:
        search.cannot_ask(location, store, f"cannot list: {exc}")
        return None
    for backup, _complete in backups:
        if prefix and not backup.stamp.startswith(prefix):
            continue
        search.found += 1
        try:
            return Candidate(location, store, backup, read_valid(store, backup))
        except (IntegrityError, InvalidStateError, OSError) as exc:
            # One unreadable file is one bad backup: the older ones may be fine.
            log.warning("skipping backup %s in %s: %s", backup.name, store.label, exc)
            search.tried.append((f"{store.label}/{backup.name}", str(exc)))
        except CloudError as exc:
            search.cannot_ask(location, store, f"cannot read {backup.name}: {exc}")
            return None
    if not backups:
        search.tried.append((store.label, "no backups"))
    return None


def install(folder: BackupsFolder, path: Path, chosen: Candidate, *, dry_run: bool,
            skipped: list[tuple[str, str]], targets: Iterable[str]) -> RestoreResult:
    """Make `path` hold the chosen backup, keeping what it replaces."""
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
    with folder.locked():
        live = read_live(path)
        kept_as = None
        try:
            if live is not None and live != data:
                kept_as = keep_replaced(folder, path, live, targets)
            if location != "local":
                _put_back(folder, backup.name, data)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, data, durable=folder.durable, mode=_backup_mode(store, backup))
        except OSError as exc:
            raise storage_error(exc, f"cannot restore {path}") from None
    log.info("restored %s from %s (%s)", path, backup.name, store.label)
    return RestoreResult(**result, replaced=replaced, kept_as=kept_as)


def keep_replaced(folder: BackupsFolder, path: Path, live: bytes, targets: Iterable[str]) -> str:
    """Keep the file a restore replaces: a valid one as a backup (owed to every
    target), an invalid one under backups/corrupt/. Returns where it went."""
    key = state_key(path)
    mode = file_mode(path)
    if is_valid_content(path.name, live):
        name = folder.store.create_backup(*key, live, mode, folder.clock())
        log.info("kept the replaced %s as backup %s", path, name)
        for target_id in targets:
            folder.outbox.add(target_id, name)  # sent with the next backup or sync
        return name
    kept = folder.keep_aside(CORRUPT_DIR, key, live, mode)
    log.warning("kept the invalid %s as %s", path, kept)
    return kept


def quarantine(folder: BackupsFolder, path: Path, targets: Iterable[str]) -> list[str]:
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
                if folder.store.read(name) is not None:
                    os.replace(folder.root / name, corrupt / name)
                    moved.append(f"{CORRUPT_DIR}/{name}")
            live = read_live(path)
            if live is not None and not is_valid_content(path.name, live):
                moved.append(keep_replaced(folder, path, live, targets))
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
    """The state file's bytes; None when it is missing."""
    try:
        return read_state_file(path)[0]
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise storage_error(exc, f"cannot read {path}") from None


def _put_back(folder: BackupsFolder, name: str, data: bytes) -> None:
    # A backup fetched from elsewhere becomes local again, sidecar last.
    try:
        folder.store.write(name, data)
        folder.store.write(name + SIDECAR_SUFFIX, sidecar_text(sha256_hex(data), name))
    except (UploadConflict, OSError) as exc:
        log.error("could not put %s back into %s: %s", name, folder.root, exc)


def _backup_mode(store: Store, backup: BackupName) -> int | None:
    where = store.path(backup.name)
    return None if where is None else file_mode(where, follow_symlinks=False, default=None)
