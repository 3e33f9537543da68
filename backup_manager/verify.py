"""Verify: check every backup a store holds (checksum, sidecar, content, completeness)."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Iterable, Mapping
from datetime import datetime

from .catalog import BackupSet, backup_sets, group_backups, read_valid
from .errors import IntegrityError, InvalidStateError, StoreUnreachable
from .folder import CORRUPT_DIR
from .formats import CLOCK_SKEW, parse_any_backup_name
from .pruning import made_readings
from .retention import GRACE_PERIOD
from .seal import signed

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    from typing import Any

    from .folder import BackupsFolder
    from .formats import BackupName, StateKey
    from .s3 import S3Store
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
        self.bucket: dict[str, Any] | None = None
        """With --cloud: the bucket's protection facts, and the lock of its newest point."""

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
        if signed(store):
            _verify_points(store, names, report)
    return report


def _verify_points(store: Store, names: list[str], report: VerifyReport) -> None:
    """Check every restore point in a store of signed copies: a planted one is refused."""
    from .points import point_name, points_in, read_point
    for number in sorted(points_in(names)[0]):
        status, detail = "ok", ""
        try:
            read_point(store, number)
        except IntegrityError as exc:
            status, detail = exc.kind, exc.detail
        except InvalidStateError as exc:
            status, detail = "invalid content", str(exc)
        except StoreUnreachable as exc:
            status, detail = "unreadable", str(exc)
        report.items.append(VerifyItem(store.label, point_name(number), status, detail))


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


def verify_bucket(cloud: S3Store, report: VerifyReport) -> None:
    """Record the bucket's versioning and Object Lock, and the lock of the newest restore
    point it holds (HeadObject); a lock that config asks for and the bucket cannot give
    is a problem."""
    from .objectlock import refused_text
    from .points import point_name, points_in
    protection = cloud.protection()
    report.bucket = protection.as_facts()
    if protection.refused:
        report.items.append(VerifyItem(cloud.label, "", "object lock refused",
                                       refused_text(cloud.label, protection.asked)))
    try:
        complete, _ = points_in(cloud.list_names(""))
        newest = point_name(max(complete)) if complete else None
        lock = cloud.lock_of(newest) if newest else None
    except StoreUnreachable:
        return  # already reported as unreachable
    report.bucket["newest_point"] = newest
    report.bucket["newest_point_lock"] = lock and {"mode": lock[0],
                                                   "retain_until": lock[1].isoformat()}


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
