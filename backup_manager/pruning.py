"""Pruning: the disk side of the retention policy (retention.py decides).

A backup is removed sidecar first, so an interrupted prune leaves an
incomplete backup, never a sidecar vouching for nothing. Never removed: the
newest backup that verifies, one still owed to a copy target, one stamped
ahead of the clock (a clock problem for a person to look at), one that a kept
restore point names. Restore points are planned by the same rules, by the time
in each manifest; the newest is always kept. Each mirror is planned from its
own listing, so a mirror that missed the newer copies keeps its own newest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from . import log
from .catalog import BackupSet, first_valid, group_backups, sidecar_time
from .errors import BackupError, IntegrityError
from .formats import CLOCK_SKEW, SIDECAR_SUFFIX, TEMP_MARK
from .points import MAX_POINT_BYTES, glance, point_name, point_number, points_in
from .retention import Decision, RetentionPolicy, plan_cleanup, plan_retention

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    from .folder import BackupsFolder
    from .formats import StateKey
    from .local import LocalStore
    from .store import Store


def prune_backups(folder: BackupsFolder, mirrors: Mapping[str, LocalStore],
                  policy: RetentionPolicy, key: StateKey | None, *, dry_run: bool,
                  targets: Iterable[str] = (),
                  known_good: str | None = None, removals_only: bool = False,
                  files: list[str] | None = None,
                  sets: Mapping[StateKey, BackupSet] | None = None) -> list[Decision]:
    """Plan (and unless `dry_run`, apply) retention for one state file or all, in
    backups/ and then in each mirror (target id -> store).

    The caller holds the folder's lock. `targets` are the ids of the configured copy
    targets (a backup one of them still waits for is kept). `known_good` names a
    backup just verified (spares re-reading it); `removals_only` skips state files
    that keep_last alone keeps whole, as after each backup; `files` is a fresh
    listing of backups/ and `sets` its backups grouped, when the caller has them.
    """
    files = folder.store.list_names() if files is None else files
    sets = group_backups(files, [key] if key else None) if sets is None else sets
    now = folder.clock()
    pending = folder.outbox.pending()
    # Only copies a configured target still waits for keep a backup: one owed to a
    # target that was removed would keep it forever.
    targets = set(targets)
    waiting = {c.name for c in pending if c.target in targets}
    plan = _plan_store(folder.store, files, sets, policy, waiting, now, known_good,
                       key=key, removals_only=removals_only)
    if not dry_run:
        _apply(plan, folder.store)
    for target_id, mirror in mirrors.items():
        owed = {c.name for c in pending if c.target == target_id}
        plan += _prune_mirror(mirror, policy, key, owed, now, dry_run, removals_only)
    return plan


def _plan_store(store: LocalStore, files: list[str], sets: Mapping[StateKey, BackupSet],
                policy: RetentionPolicy, waiting: set[str], now: datetime,
                known_good: str | None, *, key: StateKey | None, removals_only: bool
                ) -> list[Decision]:
    """Retention of the backups and points in one store (backups/ or a mirror), and the
    clean-up of its leftovers, from its own listing."""
    planned = [b for b in sets.values()
               if not (removals_only and len(b.complete_stamps) <= policy.keep_last)]
    points_too = key is None or removals_only
    complete, _ = points_in(files)
    glanced = _glance(store, complete) if planned or (
        points_too and len(complete) > policy.keep_last) else {}
    made = {backup: when for _, entries in glanced.values()
            for backup, when in entries.items() if when is not None}
    plan: list[Decision] = []
    for backups in planned:
        plan += _plan_set(store, backups, policy, waiting, now, known_good, made)
    plan = _with_points(glanced, complete, plan, policy, waiting, now, points_too=points_too)
    return plan + plan_cleanup(_leftovers(store, files, sets, key), now)


def made_readings(store: Store, names: list[str]) -> dict[str, datetime]:
    """When each backup in `store` was made, as the restore points it holds record it
    (backups no point records are left out)."""
    return {backup: when for _, entries in _glance(store, points_in(names)[0]).values()
            for backup, when in entries.items() if when is not None}


def _glance(store: Store, complete: set[int]
            ) -> dict[str, tuple[datetime | None, dict[str, datetime | None]]]:
    """(time, {backup: when made}) of each complete point in `store`, by point name."""
    glanced = {}
    for number in complete:
        name = point_name(number)
        try:
            data = store.read(name, max_bytes=MAX_POINT_BYTES)
        except IntegrityError:  # too large, or not authenticated: it records nothing
            continue
        if data is not None:
            glanced[name] = glance(data)
    return glanced


def _with_points(glanced: Mapping[str, tuple[datetime | None, dict[str, datetime | None]]],
                 complete: set[int], plan: list[Decision], policy: RetentionPolicy,
                 waiting: set[str], now: datetime, *, points_too: bool) -> list[Decision]:
    """`plan` with every backup that a kept restore point names kept, plus the plan of
    the points themselves when `points_too` (a prune of one state file leaves the
    points, which belong to every state file, to the next full prune). Points are
    planned by the time in each manifest, in sequence order: clock-proof like backups."""
    removing = any(not d.keep for d in plan)
    if not glanced or not (removing or (points_too and len(complete) > policy.keep_last)):
        return plan  # nothing to protect, and keep_last alone keeps every point
    newest = point_name(max(complete))
    protect = {name: "waiting for upload" for name in waiting & glanced.keys()}
    protect[newest] = "newest restore point"
    records = [(name, when) for name, (when, _) in sorted(glanced.items(), reverse=True)
               if when is not None]
    points = plan_retention(records, policy, protect, now=now, what="restore point",
                            in_order=True)
    kept = {d.name for d in points if d.keep} | {n for n, (when, _) in glanced.items()
                                                 if when is None}
    named = {}
    for name in sorted(kept):
        for backup in glanced[name][1]:
            named.setdefault(backup, name)
    plan = [d if d.keep or d.name not in named else
            d._replace(keep=True, reasons=(f"named by kept restore point {named[d.name]}",))
            for d in plan]
    return plan + points if points_too else plan


def _prune_mirror(mirror: LocalStore, policy: RetentionPolicy, key: StateKey | None,
                  owed: set[str], now: datetime, dry_run: bool, removals_only: bool
                  ) -> list[Decision]:
    """Retention and the clean-up of leftovers (a killed copy's temp file or incomplete
    backup) in one mirror, planned from its own listing as in backups/."""
    try:
        files = mirror.list_names()
        sets = group_backups(files, [key] if key else None)
        plan = _plan_store(mirror, files, sets, policy, owed, now, None, key=key,
                           removals_only=removals_only)
        if not dry_run:
            _apply(plan, mirror)
    except (OSError, BackupError) as exc:
        # A mirror that is away now is pruned when it is back; its copies wait meanwhile.
        log.warning("cannot prune mirror %s: %s", mirror.label, exc)
        return []
    return [d._replace(name=f"{mirror.label}/{d.name}") for d in plan]


def _plan_set(store: LocalStore, backups: BackupSet, policy: RetentionPolicy,
              waiting: set[str], now: datetime, known_good: str | None,
              made: Mapping[str, datetime]) -> list[Decision]:
    records = backups.retention_records()
    names = {name for name, _ in records}
    if known_good not in names:
        known_good = getattr(first_valid(store, backups.complete()), "name", None)
    protect = {name: "waiting for upload" for name in waiting & names}
    # Made under a clock ahead of this one: a clock problem for a person. One only named
    # after such a backup (pinned, promise 9) but made at a sane time is no problem.
    protect.update((name, "stamped in the future: a clock problem, see verify")
                   for name, when in records if made.get(name, when) > now + CLOCK_SKEW)
    if known_good is not None:
        protect[known_good] = "newest valid backup"
    return plan_retention(records, policy, protect, now=now, made=made)


def _leftovers(store: LocalStore, files: list[str], sets: Mapping[StateKey, BackupSet],
               key: StateKey | None) -> list[tuple[str, str, datetime | None, datetime]]:
    found: list[tuple[str, str, datetime | None]] = []
    for backups in sets.values():
        found += [(b.name, "incomplete backup", b.when) for b in backups.incomplete()]
        found += [(s, "orphan sidecar", sidecar_time(s)) for s in backups.orphan_sidecars]
    if key is None:
        complete, incomplete = points_in(files)
        found += [(point_name(n), "incomplete restore point", None) for n in incomplete]
        found += [(f, "orphan sidecar", None) for f in files if f.endswith(SIDECAR_SUFFIX)
                  and (point_number(f[: -len(SIDECAR_SUFFIX)]) or 0) > 0
                  and f[: -len(SIDECAR_SUFFIX)] not in files]
    temp_start = "." + (key.stem + "_" if key else "")
    found += [(f, "temp file", None) for f in files
              if TEMP_MARK in f and f.startswith(temp_start)]
    leftovers = []
    for name, kind, when in found:
        mtime = store.mtime(name)
        if mtime is not None:
            leftovers.append((name, kind, when, datetime.fromtimestamp(mtime, UTC)))
    return leftovers


def _apply(plan: Iterable[Decision], store: LocalStore) -> None:
    for decision in plan:
        if decision.keep:
            continue
        if not decision.name.endswith(SIDECAR_SUFFIX) and TEMP_MARK not in decision.name:
            store.remove(decision.name + SIDECAR_SUFFIX)
        store.remove(decision.name)
        log.info("pruned %s from %s: %s", decision.name, store.label,
                 "; ".join(decision.reasons))
