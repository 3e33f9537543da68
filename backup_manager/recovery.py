"""The start-up guard: make every state file valid before the host decides anything.

    from backup_manager import BackupManager, recover
    report = recover(BackupManager.from_config("config.yaml"))

For each state file: valid -> kept; missing or invalid -> the newest valid
backup is restored (an invalid file is kept under backups/corrupt/); nothing
anywhere and no evidence -> a first run. Where nothing valid is left but
evidence says the state existed (backups that all fail, a store that cannot
be listed, the host's own records), StateUnrecoverableError names the
commands that fix it; `accept_fresh=True` moves the backups aside and starts
over on purpose. Then the catch-up: a live file that no backup holds (a backup
missed during an outage, a deliberate restore) is backed up now, and each copy
target that lacks a state file's newest backup gets it queued.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from . import log
from .atomic import unlink_quietly, write_temp
from .catalog import backups_of
from .errors import BackupError, CloudError, NoValidBackupError, StateUnrecoverableError
from .formats import SIDECAR_SUFFIX, state_key
from .health import LIVE_BACKED_UP, LIVE_OLDER, LIVE_UNKNOWN, LIVE_UNSAVED, live_state
from .manager import BackupManager


class RecoveryReport:
    """What recover() found and did, for the host to act on and record.

    `backups_problem` is None when backups/ can be created, written and locked;
    otherwise why not (a host may refuse to trade, or go on and record it).
    `caught_up` is True when every live state file is held by its newest backup.
    """

    def __init__(self) -> None:
        self.backups_problem: str | None = None
        self.kept: list[Path] = []
        self.restored: dict[Path, str] = {}
        self.first_run: list[Path] = []
        self.fresh: dict[Path, list[str]] = {}
        self.backed_up: dict[Path, str] = {}
        self.queued: list[tuple[str, str]] = []
        self.errors: list[str] = []

    @property
    def caught_up(self) -> bool:
        return self.backups_problem is None and not self.errors

    def __repr__(self) -> str:
        return (f"RecoveryReport(restored={len(self.restored)}, first_run={len(self.first_run)}, "
                f"backed_up={len(self.backed_up)}, errors={len(self.errors)})")


def recover(manager: BackupManager, state_files: Iterable[str | Path] | None = None, *,
            accept_fresh: bool = False,
            evidence: Mapping[str | Path, str] | Callable[[Path], str | None] | None = None,
            command: str = "python -m backup_manager",
            fresh_command: str | None = None) -> RecoveryReport:
    """Restore what is missing or invalid, refuse what cannot be restored but existed,
    then catch up backups and copies, in the order of `state_files` (default: the
    configured ones). `evidence` gives the host's reason to believe a state file
    existed: a mapping by path or file name, or a function of the path, asked only
    when that file is found lost (after the files before it were recovered).
    `command` is how the operator runs the module's command line, `fresh_command`
    the host's way to start over on purpose (both named in the refusal)."""
    report = RecoveryReport()
    report.backups_problem = _backups_problem(manager)
    paths = [Path(p) for p in (manager.state_files if state_files is None else state_files)]
    if evidence is None or callable(evidence):
        hint_of = evidence or (lambda path: None)
    else:
        hints = {Path(p).name: why for p, why in evidence.items()}
        hint_of = lambda path: hints.get(path.name)  # noqa: E731
    lost: dict[Path, str] = {}
    for path in paths:
        try:
            _recover_one(manager, path, report, accept_fresh, hint_of)
        except _Lost as exc:
            lost[path] = str(exc)
    if report.backups_problem is None:
        # Even when refusing: what is valid must be held by a backup (promise 10).
        _catch_up(manager, [p for p in paths if p not in lost], report)
    if lost:
        restore = " or ".join(f"'{command} restore {p} --yes'" for p in lost)
        fresh = f"'{fresh_command}'" if fresh_command else "recover(..., accept_fresh=True)"
        raise StateUnrecoverableError(
            "refusing to trade: " + "; ".join(lost.values()) + ". To fix: check backups "
            f"with '{command} verify', restore with {restore} (add --timestamp PREFIX for "
            f"an older backup), or start over on purpose with {fresh}, which moves the "
            "damaged backups to backups/corrupt/.")
    return report


class _Lost(Exception):
    """One state file existed and cannot be restored."""


def _recover_one(manager: BackupManager, path: Path, report: RecoveryReport,
                 accept_fresh: bool, hint_of: Callable[[Path], str | None]) -> None:
    status, detail = live_state(manager.folder, path)
    if status in (LIVE_BACKED_UP, LIVE_OLDER, LIVE_UNSAVED, LIVE_UNKNOWN):
        report.kept.append(path)
        return
    if status == "invalid":
        log.warning("%s is invalid: %s", path, detail)
    try:
        result = manager.restore(path)
    except NoValidBackupError as exc:
        reasons = _evidence(path, status, detail, exc, hint_of(path))
        if not reasons:
            log.info("no %s and no backups of it: first run for this file", path.name)
            report.first_run.append(path)
            return
        if not accept_fresh:
            raise _Lost(f"{path} cannot be recovered ({'; '.join(reasons)}; tried: {exc})") \
                from None
        report.fresh[path] = manager.quarantine(path)
        log.warning("accept_fresh: starting %s over (%s)", path, "; ".join(reasons))
        return
    log.warning("recovered %s from backup %s (%s)", path, result.name, result.location)
    report.restored[path] = result.name


def _evidence(path: Path, status: str, detail: str, exc: NoValidBackupError,
              hint: str | None) -> list[str]:
    reasons = []
    if status != "missing":
        reasons.append(f"{path} exists but is {status}" + (f": {detail}" if detail else ""))
    if exc.found:
        reasons.append(f"{exc.found} backup(s) exist but none is valid")
    if exc.unreachable:
        reasons.append("could not be read: " + "; ".join(
            f"{where} ({why})" for where, why in exc.unreachable.items()))
    if hint:
        reasons.append(hint)
    return reasons


def _backups_problem(manager: BackupManager) -> str | None:
    """None when backups/ can be created, written and locked; else why not."""
    try:
        with manager.folder.locked():
            unlink_quietly(write_temp(manager.backup_dir, ".probe", b"", durable=False))
    except (BackupError, OSError) as exc:
        log.error("backups folder %s cannot be used: %s", manager.backup_dir, exc)
        return str(exc)
    return None


def _catch_up(manager: BackupManager, paths: list[Path], report: RecoveryReport) -> None:
    for path in paths:
        status, _detail = live_state(manager.folder, path)
        if status not in (LIVE_OLDER, LIVE_UNSAVED):
            continue
        try:
            made = manager.backup_state_file(path)
        except (BackupError, OSError) as exc:
            report.errors.append(f"{path}: {exc}")
            log.error("catch-up backup of %s failed: %s", path, exc)
            continue
        if made is not None:
            report.backed_up[path] = made.name
            log.warning("%s was not backed up as it stands: backed up now as %s", path,
                        made.name)
    _queue_missing_copies(manager, paths, report)


def _queue_missing_copies(manager: BackupManager, paths: list[Path],
                          report: RecoveryReport) -> None:
    newest = [b.name for b in (next(backups_of(manager.store, state_key(p)).complete(), None)
                               for p in paths) if b is not None]
    owed = {(c.target, c.name) for c in manager.outbox.pending()}
    for target_id, target in manager.copier.targets.items():
        try:
            present = set(target.list_names(""))  # one listing per target per run
        except (CloudError, OSError) as exc:
            manager.copier.note_unreachable(target_id, exc)
            log.warning("cannot list %s to catch up copies: %s", target.label, exc)
            continue
        for name in newest:
            missing = name not in present or name + SIDECAR_SUFFIX not in present
            if missing and (target_id, name) not in owed:
                manager.outbox.add(target_id, name)
                report.queued.append((target_id, name))
    if report.queued:
        log.warning("copies missing from their targets queued: %s",
                    ", ".join(f"{name} -> {t}" for t, name in report.queued))
        manager.copier.send_owed()
