"""The start-up guard: every recovery rule, decided before anything is installed.

    from backup_manager import BackupManager, recover
    report = recover(BackupManager.from_config("config.yaml"))

`plan_recovery` lists the restore points of every store, reads the live state
files, and decides in memory; `apply_recovery` then installs, catches up and
commits. The host gives facts (HostFacts: its records, how to run it), never
procedures, and gets a report or a Refusal.

With restore points, the newest one is the truth:
- a live file holding the newest point's bytes is kept;
- a lost (missing or invalid) file gets the newest point's entry, fetched and
  verified from any store; a store that cannot be seen, or bytes that no store
  holds, make that a refusal (unless `from_reachable`, `accept_fresh`);
- a valid live file that is older than the newest point (its bytes are an older
  point's entry or an older backup's, or its content records an earlier moment)
  is a rollback: refused until the host acknowledges it (`accept_rollback`), and
  the acknowledged run commits a point of kind rollback;
- any other valid live file is newer (a kill between a backup and its commit, a
  hand edit): it is caught up into a point of kind catch-up.
Without points (a backups/ folder from before them), each lost file gets its
newest valid backup, and the host's evidence decides between a first run and a
refusal; the run then commits the first point (kind upgrade).
Every start also refuses a state whose content records a moment ahead of the
clock, and an installed file older than what the host's records know of.
A refusal changes nothing but the record `status` shows (backups/.recovery.json).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from . import log
from .catalog import backups_of
from .errors import BackupError, StoreUnreachable
from .formats import SIDECAR_SUFFIX, state_key
from .install import install
from .manager import BackupManager
from .planning import plan_recovery
from .points import PointKind, point_name
from .refusal import HostFacts, Refusal
from .rules import RecoveryPlan

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:

    from .history import History


class RecoveryReport:
    """What recover() found and did, for the host to act on and record.

    `backups_problem` is None when backups/ can be created, written and locked;
    otherwise why not. `caught_up` is True when every live state file is held by a
    committed point. `point` is the number of the point committed (None: none was
    needed); `unseen` maps stores that could not be seen to why.
    """

    def __init__(self, plan: RecoveryPlan, dry_run: bool) -> None:
        self.dry_run = dry_run
        self.backups_problem = plan.backups_problem
        self.kept = list(plan.kept)
        self.restored: dict[Path, str] = {p: c.backup.name for p, c in plan.installs.items()}
        self.planned: dict[str, bytes | None] = {p.name: c.data for p, c in plan.installs.items()}
        """By file name, the bytes recovery installs (or, in a dry run, would install)."""
        self.first_run = list(plan.first_run)
        self.fresh: dict[Path, list[str]] = {p: [] for p in plan.fresh}
        self.backed_up: dict[Path, str] = {}
        self.caught_up_files = list(plan.catch_up)
        self.rolled_back = list(plan.rolled_back)
        self.unseen = dict(plan.unseen)
        self.newest_point = plan.newest.sequence if plan.newest else None
        self.identity = plan.newest.identity if plan.newest else None
        self.history = plan.history
        """Whom the history belonged to at its newest point (None: it never said)."""
        self.point: int | None = None
        self.queued: list[tuple[str, str]] = []
        self.errors: list[str] = []

    @property
    def caught_up(self) -> bool:
        return self.backups_problem is None and not self.errors

    def __repr__(self) -> str:
        return (f"RecoveryReport(restored={len(self.restored)}, first_run={len(self.first_run)}, "
                f"caught_up={len(self.caught_up_files)}, point={self.point}, "
                f"errors={len(self.errors)})")


def recover(manager: BackupManager, state_files: Iterable[str | Path] | None = None, *,
            facts: HostFacts | None = None, accept_fresh: bool = False,
            accept_rollback: bool = False, accept_identity: bool = False,
            accept_takeover: bool = False, require_fence: bool = False,
            from_reachable: bool = False, dry_run: bool = False,
            evidence: Mapping[str | Path, str] | Callable[[Path], str | None] | None = None,
            command: str | None = None, fresh_command: str | None = None
            ) -> RecoveryReport:
    """Make every state file (default: the configured ones) valid, or refuse.

    Decides first (plan_recovery), then installs, catches up and commits
    (apply_recovery); a dry run only decides, and logs what it would do. Raises
    Refusal (a StateUnrecoverableError) when the host must not trade. `evidence`
    and `command`/`fresh_command` are the older way to give HostFacts' evidence
    and commands."""
    facts = facts or HostFacts()
    if evidence is not None:
        facts.evidence = _evidence_function(evidence)
    if command is not None:
        facts.backup_command = command
    if fresh_command is not None:
        facts.commands.setdefault("accept_fresh", fresh_command)
    paths = [Path(p) for p in (manager.state_files if state_files is None else state_files)]
    require_fence = require_fence or manager.require_fence
    plan = plan_recovery(manager, paths, facts, accept_fresh=accept_fresh,
                         accept_rollback=accept_rollback, accept_identity=accept_identity,
                         accept_takeover=accept_takeover, require_fence=require_fence,
                         from_reachable=from_reachable, dry_run=dry_run)
    return apply_recovery(manager, plan, dry_run=dry_run, facts=facts)


def _evidence_function(evidence: Mapping[str | Path, str] | Callable[[Path], str | None]
                       ) -> Callable[[Path], str | None]:
    if callable(evidence):
        return evidence
    hints = {Path(p).name: why for p, why in evidence.items()}
    return lambda path: hints.get(path.name)


# --- deciding -------------------------------------------------------------------------


# --- doing ----------------------------------------------------------------------------


def apply_recovery(manager: BackupManager, plan: RecoveryPlan, *, dry_run: bool = False,
                   facts: HostFacts | None = None) -> RecoveryReport:
    """Carry out a plan: refuse (recording why), or install, start over, catch up and
    commit, then queue the copies targets lack. A dry run changes nothing and logs
    what it would do."""
    facts = facts or HostFacts()
    report = RecoveryReport(plan, dry_run)
    if plan.refusal is not None:
        if not dry_run:
            _record(manager, plan, plan.refusal)
        raise plan.refusal
    if dry_run:
        _log_dry_run(plan)
        return report
    for path, chosen in plan.installs.items():
        point_from = plan.history.read_from(plan.newest.sequence) if plan.newest else None
        install(manager.folder, path, chosen, dry_run=False, skipped=[], point=plan.newest,
                point_from=point_from)
        log.warning("recovered %s from backup %s (%s)", path, chosen.backup.name,
                    chosen.store.label)
    for path in plan.fresh:
        report.fresh[path] = manager.quarantine(path)
        log.warning("accept_fresh: starting %s over", path)
    kind = plan.commit_kind
    if kind is not None and plan.backups_problem is None:
        details = {"rolled_back_from": plan.newest.sequence} if plan.rolled_back else {}
        if kind == PointKind.TAKE_OVER:
            _set_forks_aside(manager, plan)
        why = {PointKind.TAKE_OVER: "taken over on purpose by this machine",
               PointKind.ROLLBACK: "rollback acknowledged: " + ", ".join(
                   p.name for p in plan.rolled_back),
               PointKind.FRESH_START: "started over on purpose: " + ", ".join(
                   p.name for p in plan.fresh),
               PointKind.UPGRADE: "the first restore point of this history",
               PointKind.CATCH_UP: "live state no point held: " + ", ".join(
                   p.name for p in plan.catch_up)}[kind]
        if facts.identity is not None and (plan.newest is None or
                                           plan.newest.identity is None):
            details["identity"] = facts.identity
        try:
            before = set(manager.store.list_names())
            if kind == PointKind.TAKE_OVER:
                details["took_over_from"] = {"sequence": plan.newest.sequence,
                                             "writer": plan.newest.writer}
            point = manager.commit_point(
                kind, why, details=details, fresh=[p.name for p in plan.fresh],
                state_files=list(plan.live), force=kind == PointKind.TAKE_OVER,
                follows=plan.newest if kind == PointKind.TAKE_OVER else None)
            report.point = point.sequence if point else None
            for path in plan.live:
                entry = point.entry(path.name) if point else None
                if entry is not None and entry.backup not in before:
                    report.backed_up[path] = entry.backup
        except (BackupError, OSError) as exc:
            report.errors.append(f"cannot commit a restore point: {exc}")
            log.error("cannot commit a restore point of %s: %s", kind, exc)
    if plan.backups_problem is None:
        _queue_missing_copies(manager, list(plan.live), plan.history, report)
    _record(manager, plan, None)
    return report


def _set_forks_aside(manager: BackupManager, plan: RecoveryPlan) -> None:
    """A take-over after a fork: this folder's copies of points that the other stores
    hold otherwise move to backups/forks/ (kept, never read), so every store agrees on
    the chain the take-over point follows."""
    fork = plan.history.fork()
    if fork is None:
        return
    local = fork.digests.get("local")
    others = {d for loc, d in fork.digests.items() if loc not in ("local", "follows")}
    if local is None or local in others or not others:
        return
    moved = manager.folder.set_aside("forks", [point_name(fork.sequence)])
    log.warning("take-over: this folder's own restore point %d moved to %s", fork.sequence,
                ", ".join(moved))
    plan.history = manager.history()
    plan.newest = plan.history.newest()


def _log_dry_run(plan: RecoveryPlan) -> None:
    for path, chosen in plan.installs.items():
        log.warning("dry run: would recover %s from backup %s (%s)", path,
                    chosen.backup.name, chosen.store.label)
    for path in plan.fresh:
        log.warning("dry run: would start %s over", path)
    if plan.commit_kind is not None:
        log.warning("dry run: would commit a restore point of kind %s", plan.commit_kind)


def _record(manager: BackupManager, plan: RecoveryPlan, refusal: Refusal | None) -> None:
    """What `status` shows of this start-up: its refusal, and stores it could not see."""
    doc = None if refusal is None and not plan.unseen else {
        "time": datetime.now(UTC).isoformat(),
        "refused": refusal.as_record() if refusal else None,
        "unseen": plan.unseen,
        "newest_point": plan.newest.sequence if plan.newest else None}
    try:
        manager.folder.record_recovery(doc)
    except OSError as exc:
        log.error("cannot record the outcome of recovery in %s: %s", manager.backup_dir, exc)


def _queue_missing_copies(manager: BackupManager, paths: list[Path], history: History,
                          report: RecoveryReport) -> None:
    """Owe each copy target the newest backup of each state file and the newest point
    it lacks (one listing per target per run: the one the history made)."""
    try:
        newest = [b.name for b in (next(backups_of(manager.store, state_key(p)).complete(),
                                        None) for p in paths) if b is not None]
        from .commit import newest_local_point
        point, _ = newest_local_point(manager.folder, manager.store.list_names())
    except StoreUnreachable as exc:
        report.errors.append(str(exc))
        return
    if point is not None:
        newest.append(point.name)
    manager.copier.claim()
    owed = {(c.target, c.name) for c in manager.outbox.pending()}
    for target_id, target in manager.copier.targets.items():
        if target_id not in history.names:
            log.warning("cannot list %s to catch up copies: %s", target.label,
                        history.unseen.get(target_id, "not listed"))
            continue
        present = set(history.names[target_id])
        for name in newest:
            missing = name not in present or name + SIDECAR_SUFFIX not in present
            if missing and (target_id, name) not in owed:
                manager.outbox.add(target_id, name)
                report.queued.append((target_id, name))
    if report.queued:
        log.warning("copies missing from their targets queued: %s",
                    ", ".join(f"{name} -> {t}" for t, name in report.queued))
        manager.copier.send_owed()
