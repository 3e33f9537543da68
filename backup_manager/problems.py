"""Problems: what in the status facts needs a person, with what fixes it."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Mapping
from enum import StrEnum

from .folder import CORRUPT_DIR
from .status import LIVE_UNSAVED

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    from typing import Any


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
    LOCK_REFUSED = "object-lock-refused"
    REFUSED_COPY = "unauthenticated-copy"


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
    for r in facts.get("refused_copies", []):
        problems.append(Problem(
            f"{r['store']}/{r['name']}", ProblemKind.REFUSED_COPY,
            f"{r['name']} in {r['store']} was refused, never installed: {r['why']}",
            "if a key was rotated out, put its line back in the key file; otherwise someone "
            f"who can write to {r['store']} put it there: check who can (rotate the S3 "
            f"credentials), then delete it ({_remove_command(r)}); {command} key check "
            "proves the key opens the newest point in every store"))
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


def _remove_command(refused: Mapping[str, Any]) -> str:
    where, name = refused["store"], refused["name"]
    if where.startswith("s3://"):
        return f"aws s3 rm {where.rstrip('/')}/{name} and its .sha256"
    return f"rm {where}/{name} {where}/{name}.sha256"


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
    protection = t.get("protection") or {}
    if protection.get("lock_refused"):
        asked = protection["asked"]
        problems.append(Problem(
            target, ProblemKind.LOCK_REFUSED,
            f"backup.s3_object_lock asks for {asked['mode']} for {asked['days']} day(s), but "
            f"the bucket of {target} has no Object Lock: every upload is refused and waits in "
            "the outbox", "turn Object Lock on for the bucket (docs/undeletable.md), or "
            f"remove backup.s3_object_lock; then {command} sync"))
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
