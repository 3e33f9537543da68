"""Pruning: the disk side of the retention policy (retention.py decides).

A backup is removed sidecar first, so an interrupted prune leaves an
incomplete backup, never a sidecar vouching for nothing; the newest backup
that verifies is never removed, nor one still owed to a copy target.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from . import log
from .catalog import BackupSet, first_valid, group_backups, sidecar_time
from .formats import SIDECAR_SUFFIX, TEMP_MARK
from .retention import Decision, RetentionPolicy, plan_cleanup, plan_retention

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    from .folder import BackupsFolder
    from .formats import StateKey
    from .local import LocalStore


def prune_backups(folder: BackupsFolder, mirrors: Iterable[LocalStore], policy: RetentionPolicy,
                  key: StateKey | None, *, dry_run: bool, known_good: str | None = None,
                  removals_only: bool = False) -> list[Decision]:
    """Plan (and unless `dry_run`, apply) retention for one state file or all.

    The caller holds the folder's lock. `known_good` names a backup just verified
    (spares re-reading it); `removals_only` skips state files that keep_last alone
    keeps whole, as after each backup.
    """
    files = folder.store.list_names()
    sets = group_backups(files, [key] if key else None)
    waiting = folder.outbox.pending_names()
    plan: list[Decision] = []
    for backups in sets.values():
        if removals_only and len(backups.complete_stamps) <= policy.keep_last:
            continue  # keep_last alone keeps them all: no need for their times
        plan += _plan_set(folder, backups, policy, waiting, known_good)
    plan += plan_cleanup(_leftovers(folder, files, sets, key), folder.clock())
    if not dry_run:
        _apply(plan, folder.store, mirrors)
    return plan


def _plan_set(folder: BackupsFolder, backups: BackupSet, policy: RetentionPolicy,
              waiting: set[str], known_good: str | None) -> list[Decision]:
    records = backups.retention_records()
    names = {name for name, _ in records}
    if known_good not in names:
        known_good = getattr(first_valid(folder.store, backups.complete()), "name", None)
    protect = {name: "waiting for upload" for name in waiting & names}
    if known_good is not None:
        protect[known_good] = "newest valid backup"
    return plan_retention(records, policy, protect)


def _leftovers(folder: BackupsFolder, files: list[str], sets: Mapping[StateKey, BackupSet],
               key: StateKey | None) -> list[tuple[str, str, datetime | None, datetime]]:
    found: list[tuple[str, str, datetime | None]] = []
    for backups in sets.values():
        found += [(b.name, "incomplete backup", b.when) for b in backups.incomplete()]
        found += [(s, "orphan sidecar", sidecar_time(s)) for s in backups.orphan_sidecars]
    temp_start = "." + (key.stem + "_" if key else "")
    found += [(f, "temp file", None) for f in files
              if TEMP_MARK in f and f.startswith(temp_start)]
    leftovers = []
    for name, kind, when in found:
        mtime = folder.store.mtime(name)
        if mtime is not None:
            leftovers.append((name, kind, when, datetime.fromtimestamp(mtime, UTC)))
    return leftovers


def _apply(plan: list[Decision], store: LocalStore, mirrors: Iterable[LocalStore]) -> None:
    mirrors = list(mirrors)
    for decision in plan:
        if decision.keep:
            continue
        if decision.name.endswith(SIDECAR_SUFFIX) or TEMP_MARK in decision.name:
            store.remove(decision.name)
        else:
            for where in (store, *mirrors):
                where.remove(decision.name + SIDECAR_SUFFIX)
                where.remove(decision.name)
        log.info("pruned %s: %s", decision.name, decision.reason)
