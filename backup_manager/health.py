"""Health: verify every backup a store holds, and the facts `status` reports."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Iterable, Mapping

from .atomic import read_state_file
from .catalog import (
    BackupSet,
    backup_holding,
    backup_sets,
    backups_of,
    first_valid,
    group_backups,
    read_valid,
    sidecar_digest,
)
from .errors import IntegrityError, InvalidStateError, StoreUnreachable
from .folder import CORRUPT_DIR
from .formats import (
    CLOCK_SKEW,
    parse_any_backup_name,
    sha256_hex,
    stamp_time,
    state_key,
    validate_content,
)
from .retention import GRACE_PERIOD

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    from datetime import datetime
    from pathlib import Path
    from typing import Any

    from .folder import BackupsFolder
    from .formats import BackupName, StateKey
    from .outbox import PendingCopy
    from .store import Store


class VerifyItem(namedtuple("VerifyItem", "location name status detail", defaults=("",))):
    """One file checked: where, which, its status ('ok', 'in progress', or the
    problem) and details."""

    __slots__ = ()

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "in progress")


class VerifyReport:
    """Every file verify checked; ok when none has a problem."""

    def __init__(self) -> None:
        self.items: list[VerifyItem] = []

    @property
    def ok(self) -> bool:
        return all(item.ok for item in self.items)

    @property
    def problems(self) -> list[VerifyItem]:
        return [item for item in self.items if not item.ok]


def verify_stores(folder: BackupsFolder, stores: Iterable[Store],
                  keys: list[StateKey] | None) -> VerifyReport:
    """Check checksum, sidecar, content and completeness of each backup (of the
    state files `keys`, or all) in each store; `folder`'s own store first."""
    report = VerifyReport()
    for store in stores:
        try:
            # Only objects count: a symlink or folder in backups/ is reported apart.
            names, strays = store.scan()
            sets = group_backups(names, keys)
        except StoreUnreachable as exc:
            report.items.append(VerifyItem(store.label, "", "unreachable", str(exc)))
            continue
        for backups in sets.values():
            _verify_set(folder, store, backups, report)
        if store is folder.store:
            _report_strays(store, strays, report, keys)
    return report


def verify_uploaded(folder: BackupsFolder, cloud: Store, target_id: str,
                    keys: list[StateKey] | None, report: VerifyReport) -> None:
    """Report each complete local backup that has no copy in `cloud`."""
    pending = {c.name for c in folder.outbox.pending(target_id)}
    try:
        remote = set(cloud.list_names(""))
    except StoreUnreachable:
        return  # already reported as unreachable
    for backups in backup_sets(folder.store, keys).values():
        for backup in backups.complete():
            if backup.name not in remote:
                status = "upload pending" if backup.name in pending else "not uploaded"
                report.items.append(VerifyItem(cloud.label, backup.name, status,
                                               "local backup has no copy in the cloud"))


def _verify_set(folder: BackupsFolder, store: Store, backups: BackupSet,
                report: VerifyReport) -> None:
    ahead = folder.clock() + CLOCK_SKEW
    for backup, complete in backups:
        status, detail = "ok", ""
        try:
            read_valid(store, backup)
            if backup.when > ahead:
                status, detail = FUTURE, move_aside_hint(folder, backup.name)
        except IntegrityError as exc:
            status, detail = exc.kind, exc.detail
            if not complete and _is_fresh(folder, store, backup):
                status = "in progress"
        except InvalidStateError as exc:
            status, detail = "invalid content", str(exc)
        except StoreUnreachable as exc:
            status, detail = "unreadable", str(exc)
        report.items.append(VerifyItem(store.label, backup.name, status, detail))
    for sidecar in backups.orphan_sidecars:
        report.items.append(VerifyItem(store.label, sidecar, "orphan sidecar",
                                       "its backup is missing"))


def _report_strays(store: Store, strays: list[str], report: VerifyReport,
                   keys: list[StateKey] | None) -> None:
    for name in strays:
        parsed = parse_any_backup_name(name)
        if parsed and (keys is None or (parsed.stem, parsed.suffix) in keys):
            report.items.append(VerifyItem(store.label, name, "not a regular file",
                                           "a symlink or folder where a backup belongs"))


def _is_fresh(folder: BackupsFolder, store: Store, backup: BackupName) -> bool:
    mtime = store.mtime(backup.name)
    limit = (folder.clock() - GRACE_PERIOD).timestamp()
    return mtime is not None and mtime >= limit and backup.when.timestamp() >= limit


FUTURE = "stamped in the future"


def move_aside_hint(folder: BackupsFolder, name: str) -> str:
    """What to do about a backup stamped ahead of the clock."""
    return (f"the clock was ahead when it was made, or is behind now; if the clock is "
            f"right, move it aside: mv {folder.root / name} {folder.root / name}.sha256 "
            f"{folder.root / CORRUPT_DIR}/")


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
    last error."""
    now = folder.clock()
    files, _ = folder.store.scan()
    sets = group_backups(files, None)
    pending = folder.outbox.pending()
    if state_files:
        rows = [_state_status(folder, state_key(p), sets.get(state_key(p)), now, p)
                for p in state_files]
    else:
        rows = [_state_status(folder, k, sets[k], now, None) for k in sorted(sets)]
    return {
        "backup_dir": str(folder.root),
        "disk_bytes": sum(folder.store.size(f) or 0 for f in files),
        "state_files": rows,
        "targets": [_target_status(folder, t_id, t, pending, now)
                    for t_id, t in targets.items()],
        "unconfigured_targets": unconfigured_copies(pending, targets, now),
    }


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


def _state_status(folder: BackupsFolder, key: StateKey, backups: BackupSet | None,
                  now: datetime, path: Path | None) -> dict[str, Any]:
    backups = backups or BackupSet(key, [], set())
    newest = first_valid(folder.store, backups.complete())
    when = newest.when if newest else None
    future = []
    if backups.newest_stamp and stamp_time(backups.newest_stamp) > now + CLOCK_SKEW:
        future = [name for name, t in backups.retention_records() if t > now + CLOCK_SKEW]
    live, detail = live_state(folder, path) if path is not None else (None, "")
    return {
        "path": str(path) if path is not None else None,
        "live": live,
        "live_detail": detail,
        "stamped_in_future": future,
        "state_file": key.file_name,
        "backups": len(backups),
        "complete": len(backups.complete_stamps),
        "newest_valid": newest.name if newest else None,
        "newest_valid_time": when.isoformat() if when else None,
        "newest_valid_age_seconds": (now - when).total_seconds() if when else None,
    }


def _target_status(folder: BackupsFolder, target_id: str, target: Store,
                   pending: list[PendingCopy], now: datetime) -> dict[str, Any]:
    mine = [c for c in pending if c.target == target_id]
    errors = [c for c in mine if c.last_error]
    last_ok = folder.outbox.last_success(target_id)
    return {
        "target": target.label,
        "pending": len(mine),
        "conflicts": sum(c.conflict for c in mine),
        "oldest_pending_age_seconds":
            (now - min(c.queued_at for c in mine)).total_seconds() if mine else None,
        "last_success": last_ok.isoformat() if last_ok else None,
        "last_error": errors[-1].last_error if errors else None,
    }


FIX = "; fix: "
"""Separates a problem from what fixes it in each line of `status_problems`."""


def status_problems(facts: Mapping[str, Any], max_age_hours: float | None = None,
                    command: str = "python -m backup_manager",
                    host_command: str = "the host's daily check") -> list[str]:
    """What in `status` facts needs a person, one line each (empty: all is well): the
    problem, then FIX, then what fixes it. `command` is how the operator runs the
    module's command line, `host_command` the host's daily check (fix commands start
    with them). `unconfigured_targets`, when present, lists copies still owed to
    targets no longer configured."""
    limit = max_age_hours * 3600 if max_age_hours is not None else None
    problems = []
    if not facts["state_files"]:
        problems.append("no state files configured and no backups found" + FIX +
                        "run it from the folder holding config.yaml, or pass --config "
                        "PATH/TO/config.yaml; that file lists them under backup.state_files")
    if facts.get("last_backup_error"):
        problems.append(f"a backup failed and was not caught up yet: "
                        f"{facts['last_backup_error']}" + FIX + "fix the cause it names, then "
                        f"run the daily check: {host_command} (it backs up what no backup "
                        "holds and clears this record)")
    for s in facts["state_files"]:
        path = s["path"] or f"PATH/TO/{s['state_file']}"
        if s["live"] == LIVE_UNSAVED:
            problems.append(f"{path} holds bytes no backup holds" + FIX +
                            f"{command} backup {path}")
        for name in s["stamped_in_future"]:
            folder = facts["backup_dir"]
            problems.append(f"{name} is stamped in the future: the clock was ahead when it "
                            "was made, or is behind now" + FIX + "check the clock "
                            "(timedatectl status); if it is right, move the backup aside: "
                            f"mkdir -p {folder}/{CORRUPT_DIR} && mv {folder}/{name} "
                            f"{folder}/{name}.sha256 {folder}/{CORRUPT_DIR}/")
        if s["newest_valid"] is None:
            problems.append(f"{s['state_file']} has no valid backup" + FIX +
                            f"{command} verify says why; if the live file is valid, "
                            f"{command} backup {path}")
        elif limit is not None and s["newest_valid_age_seconds"] > limit:
            problems.append(f"{s['state_file']}: newest valid backup is "
                            f"{age(s['newest_valid_age_seconds'])} old" + FIX +
                            "check that the DalioLite daily check still runs (cron, its "
                            f"log); {command} backup {path} makes one now")
    for t in facts["targets"]:
        if t["conflicts"]:
            problems.append(f"{t['conflicts']} conflicting copy(ies) to {t['target']}: it "
                            "holds other bytes under the same name, never overwritten" + FIX +
                            f"{command} sync names them; give each machine its own "
                            f"s3_prefix or folder, then drop them on purpose: {command} sync "
                            f"--forget {t['target']}")
        oldest = t["oldest_pending_age_seconds"]
        if oldest is not None and t["last_success"] is None:
            problems.append(f"{t['pending']} copy(ies) to {t['target']} pending and it never "
                            "took one" + FIX + f"{command} sync shows the error; fix it "
                            "(credentials, bucket, endpoint, a folder not mounted), then run "
                            f"{command} sync again")
        if limit is not None and oldest is not None and oldest > limit:
            problems.append(f"copies to {t['target']} pending for {age(oldest)}" + FIX +
                            f"{command} sync shows the error; fix it, then run {command} "
                            "sync again")
    for t in facts.get("unconfigured_targets", []):
        problems.append(f"{t['pending']} copy(ies) owed to {t['target']}, which is no longer "
                        "configured (cloud turned off, or a mirror removed)" + FIX +
                        "configure it again and run sync, or drop them on purpose: "
                        f"{command} sync --forget {t['target']}")
    return problems


def split_fix(problem: str) -> tuple[str, str]:
    """(the problem, what fixes it) of one line of status_problems."""
    what, _, fix = problem.rpartition(FIX)
    return (what, fix) if what else (problem, "")


def age(seconds: float | None) -> str:
    """A duration for people: 45s, 12.5m, 3.0h, 2.1d."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"
