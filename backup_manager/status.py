"""Status: the facts of an installation that `status` reports (each state file's newest
valid backup and live file, restore points, copy targets)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from .atomic import read_state_file
from .catalog import (
    BackupSet,
    backup_holding,
    backups_of,
    first_valid,
    group_backups,
    sidecar_digest,
)
from .content import validate_content
from .errors import IntegrityError, InvalidStateError, StoreUnreachable
from .formats import CLOCK_SKEW, sha256_hex, stamp_time, state_key
from .pruning import made_readings
from .seal import refused_copies, signed, unsealed

INTENTS_SHOWN = 50  # the newest points searched for intents that no point settles

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from .folder import BackupsFolder
    from .formats import StateKey
    from .outbox import PendingCopy
    from .store import Store


LIVE_BACKED_UP = "backed up"
LIVE_OLDER = "equals an older backup"
LIVE_UNSAVED = "not backed up"
LIVE_UNKNOWN = "backups cannot be listed"


def live_state(folder: BackupsFolder, path: Path) -> tuple[str, str]:
    """How a live state file stands against its backups in backups/: (status, detail).
    Status is LIVE_BACKED_UP (its newest complete backup holds its bytes), LIVE_OLDER
    (an older one does: right after a deliberate restore), LIVE_UNSAVED (no backup
    holds them), LIVE_UNKNOWN (valid, but backups/ cannot be listed), "missing",
    "invalid" or "unreadable"."""
    try:
        live = read_state_file(path)[0]
    except FileNotFoundError:
        return "missing", ""
    except OSError as exc:
        return "unreadable", str(exc)
    try:
        validate_content(path.name, live)
    except InvalidStateError as exc:
        return "invalid", str(exc)
    key, digest = state_key(path), sha256_hex(live)
    try:
        newest = next(backups_of(folder.store, key).complete(), None)
    except OSError as exc:
        return LIVE_UNKNOWN, str(exc)
    if newest is not None and sidecar_digest(folder.store, newest.name) == digest:
        return LIVE_BACKED_UP, newest.name
    holder = backup_holding(folder.store, key, digest)
    if holder is not None:
        return LIVE_OLDER, f"holds the bytes of {holder}; the next backup or run records it"
    return LIVE_UNSAVED, "holds bytes no backup holds"


def status_facts(folder: BackupsFolder, state_files: list[Path], targets: Mapping[str, Store]
                 ) -> dict[str, Any]:
    """Per state file (the configured ones, or every state file with backups) the
    newest valid backup, its age and how the live file stands against it; disk
    use; per copy target the pending count, oldest pending age, last success and
    last error, and for a bucket its versioning and Object Lock (`protection`)."""
    now = folder.clock()
    files, _ = folder.store.scan()
    sets = group_backups(files, None)
    pending = _as_claimed(folder, folder.outbox.pending(), targets)
    made = made_readings(folder.store, files)
    if state_files:
        rows = [_state_status(folder, state_key(p), sets.get(state_key(p)), now, p, made)
                for p in state_files]
    else:
        rows = [_state_status(folder, k, sets[k], now, None, made) for k in sorted(sets)]
    return {
        "backup_dir": str(folder.root),
        "backups_unwritable": _unwritable(folder),
        "disk_bytes": sum(folder.store.size(f) or 0 for f in files),
        "points": _points_status(folder, files),
        "recovery": folder.recovery_record(),
        "state_files": rows,
        "targets": [_target_status(folder, t_id, t, pending, now)
                    for t_id, t in targets.items()],
        "unconfigured_targets": unconfigured_copies(pending, targets, now),
        "copies_signed": all(map(signed, targets.values())) if targets else None,
        "refused_copies": refused_copies(folder.root),
    }


def _unwritable(folder: BackupsFolder) -> str | None:
    """Why backups/ cannot be written (a read-only mount, no permission); None when it
    can, or does not exist yet. Looked at, not tried: status writes nothing."""
    import errno
    import os
    try:
        if os.statvfs(folder.root).f_flag & os.ST_RDONLY:
            return os.strerror(errno.EROFS)
    except OSError:
        return None
    return None if os.access(folder.root, os.W_OK | os.X_OK) else os.strerror(errno.EACCES)


def _as_claimed(folder: BackupsFolder, pending: list[PendingCopy],
                targets: Mapping[str, Store]) -> list[PendingCopy]:
    """`pending` with the queue of each target whose store changed since it was
    recorded (another bucket, prefix or endpoint) shown as the next copy will set it
    aside: owed to the store it was recorded for, not to the one configured now."""
    from .copies import target_identity
    from .outbox import aside_name
    moved = {}
    for target_id, target in targets.items():
        recorded = folder.outbox.identity(target_id)
        if recorded is not None and recorded != target_identity(target):
            moved[target_id] = aside_name(target_id, recorded)
    return [c._replace(target=moved[c.target]) if c.target in moved else c for c in pending]


def unconfigured_copies(pending: list[PendingCopy], targets: Mapping[str, Store],
                  now: datetime) -> list[dict[str, Any]]:
    """Copies owed to targets no longer configured (cloud turned off, a mirror
    removed): per target id, how many and the oldest one's age."""
    owed: dict[str, list[PendingCopy]] = {}
    for copy in pending:
        if copy.target not in targets:
            owed.setdefault(copy.target, []).append(copy)
    return [{"target": target, "pending": len(copies),
             "oldest_pending_age_seconds": (now - copies[0].queued_at).total_seconds()}
            for target, copies in sorted(owed.items())]


def _points_status(folder: BackupsFolder, files: list[str]) -> dict[str, Any]:
    """The newest restore point in backups/, and whether it reads back intact."""
    from .points import point_name, points_in, read_point
    complete, _ = points_in(files)
    if not complete:
        return {"count": 0, "newest": None, "newest_damaged": None}
    number = max(complete)
    try:
        point = read_point(folder.store, number)
    except (IntegrityError, InvalidStateError, StoreUnreachable) as exc:
        return {"count": len(complete), "newest": number, "newest_damaged": str(exc),
                "name": point_name(number)}
    return {"count": len(complete), "newest": number, "newest_damaged": None,
            "name": point.name, "time": point.time.isoformat(), "kind": point.kind,
            "writer": point.writer, "files": {n: e and e.backup for n, e in point.files.items()},
            "open_intents": _open_intents(folder)}


def _open_intents(folder: BackupsFolder) -> list[dict[str, Any]]:
    """The intents in backups/ that no later point settles, with their orders as the
    host recorded them (the package never asks a broker)."""
    from .history import History, open_intents
    return [{"sequence": p.sequence, "time": p.time.isoformat(), "writer": p.writer,
             "orders": list(p.details.get("orders", ()))}
            for p in open_intents(History([("backups", folder.store)]), within=INTENTS_SHOWN)]


def _state_status(folder: BackupsFolder, key: StateKey, backups: BackupSet | None,
                  now: datetime, path: Path | None, made: Mapping[str, datetime]
                  ) -> dict[str, Any]:
    backups = backups or BackupSet(key, [], set())
    newest_complete = next(backups.complete(), None)
    newest = first_valid(folder.store, backups.complete())
    when = made.get(newest.name, newest.when) if newest else None
    future, pinned = [], 0
    if backups.newest_stamp and stamp_time(backups.newest_stamp) > now + CLOCK_SKEW:
        # Named ahead of the clock: made under a clock ahead (the jump), or named just
        # after such a backup while the clock was right (pinned, promise 9).
        for name, t in reversed(backups.retention_records()):
            if made.get(name, t) > now + CLOCK_SKEW:
                future.append(name)
            elif future and t > now + CLOCK_SKEW:
                pinned += 1
    live, detail = live_state(folder, path) if path is not None else (None, "")
    return {
        "path": str(path) if path is not None else None,
        "live": live,
        "live_detail": detail,
        "stamped_in_future": future,
        "pinned_after_future": pinned,
        "state_file": key.file_name,
        "backups": len(backups),
        "complete": len(backups.complete_stamps),
        "newest_valid": newest.name if newest else None,
        "newest_damaged": newest_complete.name if newest_complete is not None and
        newest_complete != newest else None,
        "newest_valid_time": when.isoformat() if when else None,
        "newest_valid_age_seconds": (now - when).total_seconds() if when else None,
    }


def _target_status(folder: BackupsFolder, target_id: str, target: Store,
                   pending: list[PendingCopy], now: datetime) -> dict[str, Any]:
    from .copies import target_identity
    mine = [c for c in pending if c.target == target_id]
    errors = [c for c in mine if c.last_error]
    last_ok = folder.outbox.last_success(target_id) if folder.outbox.belongs(
        target_id, target_identity(target)) else None
    from .s3 import S3Store
    bucket = unsealed(target)
    return {
        "target": target.label,
        # Read from the bucket at each status: one request (two without Object Lock).
        "protection": bucket.protection().as_facts() if isinstance(bucket, S3Store) else None,
        "pending": len(mine),
        "conflicts": sum(c.conflict for c in mine),
        "oldest_pending_age_seconds":
            (now - min(c.queued_at for c in mine)).total_seconds() if mine else None,
        "last_success": last_ok.isoformat() if last_ok else None,
        "last_error": errors[-1].last_error if errors else None,
    }
