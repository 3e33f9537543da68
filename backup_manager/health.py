"""Health: verify every backup a store holds, and the facts `status` reports."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Iterable, Mapping
from datetime import datetime
from enum import StrEnum

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
from .pruning import made_readings
from .retention import GRACE_PERIOD

INTENTS_SHOWN = 50  # the newest points searched for intents that no point settles

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
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
        made = made_readings(store, names) if sets else {}
        for backups in sets.values():
            _verify_set(folder, store, backups, report, made)
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
                report: VerifyReport, made: Mapping[str, datetime]) -> None:
    ahead = folder.clock() + CLOCK_SKEW
    for backup, complete in backups:
        status, detail = "ok", ""
        try:
            read_valid(store, backup)
            # By when it was made: one only named after such a backup (pinned) is fine.
            if made.get(backup.name, backup.when) > ahead:
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
    from .points import History, open_intents
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
    return {
        "target": target.label,
        "pending": len(mine),
        "conflicts": sum(c.conflict for c in mine),
        "oldest_pending_age_seconds":
            (now - min(c.queued_at for c in mine)).total_seconds() if mine else None,
        "last_success": last_ok.isoformat() if last_ok else None,
        "last_error": errors[-1].last_error if errors else None,
    }


class ProblemKind(StrEnum):
    """What kind of thing needs a person (a stable label for alerts)."""

    HOST_REFUSES = "host-refuses"
    STORE_UNSEEN = "store-unseen"
    BACKUPS_UNWRITABLE = "backups-folder-unwritable"
    NO_STATE_FILES = "no-state-files"
    BACKUP_FAILED = "backup-failed"
    UNSAVED = "unsaved-live-bytes"
    STAMPED_IN_FUTURE = "stamped-in-future"
    NO_VALID_BACKUP = "no-valid-backup"
    NEWEST_DAMAGED = "newest-backup-damaged"
    POINT_DAMAGED = "newest-point-damaged"
    BACKUP_TOO_OLD = "backup-too-old"
    COPY_CONFLICTS = "copy-conflicts"
    NEVER_COPIED = "target-never-took-a-copy"
    COPIES_LATE = "copies-pending-too-long"
    UNCONFIGURED_TARGET = "copies-owed-to-unconfigured-target"
    INTENT_UNSETTLED = "intent-unsettled"


class Problem(namedtuple("Problem", "subject kind what fix")):
    """One thing in `status` that needs a person: its subject (a state file's name, a
    copy target, or "site"), its kind, what is wrong, and what fixes it."""

    __slots__ = ()


SITE = "site"


def status_problems(facts: Mapping[str, Any], max_age_hours: float | None = None,
                    command: str = "python -m backup_manager",
                    host_command: str = "the host's daily check") -> list[Problem]:
    """What in `status` facts needs a person (empty: all is well). `command` is how the
    operator runs the module's command line, `host_command` the host's daily check
    (fix commands start with them). `unconfigured_targets`, when present, lists
    copies still owed to targets no longer configured; `recovery`, what the last
    start-up recorded (its refusal, stores it could not see)."""
    limit = max_age_hours * 3600 if max_age_hours is not None else None
    problems = _site_problems(facts, command, host_command)
    for s in facts["state_files"]:
        problems += _file_problems(s, facts, limit, command)
    for t in facts["targets"]:
        problems += _target_problems(t, limit, command)
    for t in facts.get("unconfigured_targets", []):
        problems.append(Problem(
            t["target"], ProblemKind.UNCONFIGURED_TARGET,
            f"{t['pending']} copy(ies) owed to {t['target']}, which is no longer configured "
            "(cloud turned off, or a mirror removed)",
            f"configure it again and run sync, or drop them on purpose: {command} sync "
            f"--forget {t['target']}"))
    return problems


def _site_problems(facts: Mapping[str, Any], command: str, host_command: str) -> list[Problem]:
    problems = []
    record = facts.get("recovery") or {}
    refused = record.get("refused")
    if refused:
        problems.append(Problem(SITE, ProblemKind.HOST_REFUSES,
                                f"the host refuses to trade: {refused['headline']}: " + "; ".join(
                                    f"{subject}: {why}" for subject, why in refused["reasons"]),
                                "  ".join(f"{n}. {c}" for n, c in
                                          enumerate(refused["commands"], 1))))
    for where, why in (record.get("unseen") or {}).items():
        problems.append(Problem(where, ProblemKind.STORE_UNSEEN,
                                f"the last start-up could not see {where}: {why}",
                                f"fix it (credentials, endpoint, a folder not mounted); "
                                f"{command} sync and the next run check it again"))
    if facts.get("backups_unwritable"):
        problems.append(Problem(SITE, ProblemKind.BACKUPS_UNWRITABLE,
                                f"the backups folder {facts['backup_dir']} cannot be written "
                                f"({facts['backups_unwritable']}): no backup, restore point "
                                "or kept file can be made; restores from it still work when "
                                "nothing needs keeping",
                                f"make it writable (remount it read-write, fix its owner or "
                                f"free space), then run the daily check: {host_command}"))
    if not facts["state_files"]:
        problems.append(Problem(SITE, ProblemKind.NO_STATE_FILES,
                                "no state files configured and no backups found",
                                "run it from the folder holding config.yaml, or pass --config "
                                "PATH/TO/config.yaml; that file lists them under "
                                "backup.state_files"))
    if facts.get("last_backup_error"):
        problems.append(Problem(SITE, ProblemKind.BACKUP_FAILED,
                                "a backup failed and was not caught up yet: "
                                f"{facts['last_backup_error']}",
                                f"fix the cause it names, then run the daily check: "
                                f"{host_command} (it backs up what no backup holds and clears "
                                "this record)"))
    points = facts.get("points") or {}
    if points.get("newest_damaged"):
        problems.append(Problem(SITE, ProblemKind.POINT_DAMAGED,
                                f"the newest restore point {points.get('name')} does not read "
                                f"back intact: {points['newest_damaged']}",
                                f"{command} verify; the next daily check commits a new point "
                                f"({host_command})"))
    for intent in points.get("open_intents", ()):
        problems.append(Problem(
            f"restore point {intent['sequence']}", ProblemKind.INTENT_UNSETTLED,
            f"the intent of {intent['time'][:16].replace('T', ' ')} UTC (writer "
            f"{intent['writer']}) names {len(intent['orders'])} order(s) that no later point "
            "settles: " + ", ".join(order_text(o) for o in intent["orders"]),
            f"run the daily check: {host_command} (it asks the broker what became of each "
            "order and finishes that rebalance; nothing is ordered twice)"))
    return problems


def order_text(order: Mapping[str, Any]) -> str:
    """One order of an intent, for a person."""
    return f"{order.get('side')} {order.get('symbol')} ${order.get('notional')} " \
           f"({order.get('client_order_id')})"


def _file_problems(s: Mapping[str, Any], facts: Mapping[str, Any], limit: float | None,
                   command: str) -> list[Problem]:
    name = s["state_file"]
    path = s["path"] or f"PATH/TO/{name}"
    problems = []
    if s["live"] == LIVE_UNSAVED:
        problems.append(Problem(name, ProblemKind.UNSAVED, f"{path} holds bytes no backup holds",
                                f"{command} backup {path}"))
    for backup in s["stamped_in_future"]:
        folder = facts["backup_dir"]
        pinned = s.get("pinned_after_future") or 0
        since = (f"; the clock jumped: the {pinned} backup(s) made since are named just after "
                 "it (name order is creation order), and retention ages each by when it was "
                 "made, so nothing is lost") if pinned else ""
        problems.append(Problem(
            name, ProblemKind.STAMPED_IN_FUTURE,
            f"{backup} is stamped in the future: the clock was ahead when it was made, or is "
            f"behind now{since}", "check the clock (timedatectl status); if it is right, move the "
            f"backup aside: mkdir -p {folder}/{CORRUPT_DIR} && mv {folder}/{backup} "
            f"{folder}/{backup}.sha256 {folder}/{CORRUPT_DIR}/"))
    if s.get("newest_damaged"):
        problems.append(Problem(
            name, ProblemKind.NEWEST_DAMAGED,
            f"the newest backup of {name}, {s['newest_damaged']}, does not match its sidecar or "
            f"is invalid; the newest valid one is {s['newest_valid'] or 'none'}",
            f"{command} verify says why; " + (
                f"the live file is valid: {command} backup {path}" if s["live"] not in
                ("missing", "invalid", "unreadable", None) else
                f"{command} restore {path} --dry-run shows what a restore would install")))
    if s["newest_valid"] is None:
        fix = f"{command} verify says why" + (
            f"; the live file is valid: {command} backup {path}" if s["live"] not in
            ("missing", "invalid", "unreadable", None) else "")
        problems.append(Problem(name, ProblemKind.NO_VALID_BACKUP,
                                f"{name} has no valid backup", fix))
    elif limit is not None and s["newest_valid_age_seconds"] > limit:
        problems.append(Problem(
            name, ProblemKind.BACKUP_TOO_OLD,
            f"{name}: newest valid backup is {age(s['newest_valid_age_seconds'])} old",
            "check that the DalioLite daily check still runs (cron, its log); "
            f"{command} backup {path} makes one now"))
    return problems


def _target_problems(t: Mapping[str, Any], limit: float | None, command: str) -> list[Problem]:
    problems = []
    target = t["target"]
    if t["conflicts"]:
        problems.append(Problem(
            target, ProblemKind.COPY_CONFLICTS,
            f"{t['conflicts']} conflicting copy(ies) to {target}: it holds other bytes under "
            "the same name, never overwritten",
            f"{command} sync names them; give each machine its own s3_prefix or folder, then "
            f"drop them on purpose: {command} sync --forget {target}"))
    oldest = t["oldest_pending_age_seconds"]
    if oldest is not None and t["last_success"] is None:
        problems.append(Problem(
            target, ProblemKind.NEVER_COPIED,
            f"{t['pending']} copy(ies) to {target} pending and it never took one",
            f"{command} sync shows the error; fix it (credentials, bucket, endpoint, a folder "
            f"not mounted), then run {command} sync again"))
    if limit is not None and oldest is not None and oldest > limit:
        problems.append(Problem(
            target, ProblemKind.COPIES_LATE, f"copies to {target} pending for {age(oldest)}",
            f"{command} sync shows the error; fix it, then run {command} sync again"))
    return problems


def age(seconds: float | None) -> str:
    """A duration for people: 45s, 12.5m, 3.0h, 2.1d."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"
