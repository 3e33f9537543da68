"""The commands of `python -m backup_manager`, one function each: (manager, parsed
arguments, context) -> exit code. Each prints through console.py.
"""

from __future__ import annotations

import sys
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path

from . import log
from .atomic import file_lock, read_state_file
from .console import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    OutputClosed,
    UsageError,
    arg,
    command_prefix,
    emit,
    fail,
    out,
    resolve,
    say,
    shown,
    state_arg,
    state_files,
    table,
)
from .copies import CLOUD_TARGET
from .errors import BackupError, LockTimeout, NoValidBackupError
from .formats import fetch_verified
from .manager import BackupManager

# health (status and its rules) is imported by the commands that need it: a cron
# `backup` run does not pay for it.
TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator
    from typing import Any

SYNC_PROGRESS_EVERY = 10  # without a terminal: one progress line per this many copies


# --- commands -----------------------------------------------------------------------


def cmd_list(manager: BackupManager, args: argparse.Namespace, config: dict) -> int:
    from .health import age
    now = datetime.now(UTC)
    remote, pending = _cloud_view(manager)
    doc, lines = [], []
    for path in state_files(manager, args.state_file, args, config):
        rows, entries = [], []
        for info in manager.list_backups(path):
            health = _health(manager, info)
            cloud = "-" if manager.cloud is None else (
                "pending" if info.name in pending else
                "unknown" if remote is None else
                "uploaded" if info.name in remote else "missing")
            entries.append({"name": info.name, "time": info.timestamp.isoformat(),
                            "age_seconds": (now - info.timestamp).total_seconds(),
                            "size": info.size, "status": health, "cloud": cloud})
            rows.append([info.name, f"{info.timestamp:%Y-%m-%d %H:%M:%S}",
                         age((now - info.timestamp).total_seconds()), info.size, health, cloud])
        doc.append({"state_file": shown(path, config), "backups": entries})
        lines.append(f"{shown(path, config)}: {len(rows)} backup(s) in "
                     f"{shown(manager.backup_dir, config)}")
        if rows:
            lines += ["  " + ln for ln in table(rows, ["NAME", "TIME (UTC)", "AGE", "SIZE",
                                                       "STATUS", "CLOUD"])]
    emit(args, doc, lines or [f"no backups in {shown(manager.backup_dir, config)}"])
    return EXIT_OK


def _health(manager: BackupManager, info: Any) -> str:
    if not info.complete:
        return "incomplete"
    try:
        fetch_verified(manager.store, info.name)
    except BackupError:
        return "damaged"
    return "ok"


def _cloud_view(manager: BackupManager) -> tuple[set[str] | None, set[str]]:
    if manager.cloud is None:
        return None, set()
    pending = {c.name for c in manager.outbox.pending(CLOUD_TARGET)}
    try:
        return set(manager.cloud.list_names("")), pending
    except BackupError as exc:
        log.warning("cannot list the cloud: %s", exc)
        return None, pending


def cmd_backup(manager: BackupManager, args: argparse.Namespace, config: dict) -> int:
    paths = [resolve(manager, name, args, config) for name in args.state_files]
    made, lines, failed = [], [], False
    for path in paths:
        name = shown(path, config)
        try:
            backup = manager.backup_state_file(path)
        except BackupError as exc:
            lines.append(f"{name}: FAILED: {exc}")
            made.append({"state_file": name, "backup": None, "error": str(exc)})
            failed = True
            continue
        if backup is None:
            lines.append(f"{name}: FAILED: the file does not exist")
            made.append({"state_file": name, "backup": None, "error": "does not exist"})
            failed = True
        else:
            lines.append(f"{name}: {backup.name}")
            made.append({"state_file": name, "backup": backup.name, "error": None})
    emit(args, made, lines)
    return EXIT_FAILED if failed else EXIT_OK


REPLACES = {None: "nothing (the file is missing)",
            "valid": "a valid file, kept under backups/replaced/ unless a backup holds it",
            "invalid": "an invalid file, which will be kept under backups/corrupt/"}


def cmd_restore(manager: BackupManager, args: argparse.Namespace, config: dict) -> int:
    path = resolve(manager, args.state_file, args, config)
    name = shown(path, config)
    try:
        planned = manager.plan_restore(path, timestamp=args.timestamp, source=args.source)
    except NoValidBackupError as exc:
        return fail(args, str(exc), EXIT_FAILED, state_file=name, restored=False)
    plan = manager.install_restore(planned, dry_run=True)
    facts = {"state_file": name, "backup": plan.name, "source": plan.location,
             "time": plan.timestamp.isoformat(), "replaces": plan.replaced,
             "changed": plan.changed, "dry_run": args.dry_run, "restored": False}
    lines = [f"backup:   {plan.name} ({plan.location}, {plan.timestamp:%Y-%m-%d %H:%M:%S} UTC)",
             f"replaces: {REPLACES[plan.replaced]}" if plan.changed else
             "replaces: nothing: the file already holds this backup"]
    if not plan.changed or args.dry_run:
        emit(args, facts, lines + ([] if plan.changed else ["nothing to do"]))
        return EXIT_OK
    retry = f"{command_prefix(args, config)} restore {state_arg(path, config)}" + (
        f" --timestamp {args.timestamp}" if args.timestamp else "") + (
        f" --from {args.source}" if args.source != "auto" else "") + (
        " --path-as-given" if args.path_as_given else "") + " --yes"
    if plan.replaced == "valid" and not args.yes:
        if args.json or not sys.stdin.isatty():
            return fail(args, f"{name} holds a valid state; refusing to replace it without "
                              f"confirmation: add --yes ({retry})", EXIT_USAGE)
        if not _confirm(name, lines):
            say("not restored")
            return EXIT_FAILED
        lines = []  # shown already, before the question
    before = _live(path)
    try:
        with _host_locked(config):
            # Exactly the backup shown (and confirmed), and only over the file it was
            # shown against: a daily check may have written it meanwhile.
            if _live(path) != before:
                return fail(args, f"{name} changed since the backup to restore was chosen "
                                  f"(a DalioLite run wrote it); nothing was restored. Look "
                                  f"again: {retry.replace(' --yes', ' --dry-run')}",
                            EXIT_FAILED, state_file=name, restored=False)
            result = manager.install_restore(planned)
    except LockTimeout as exc:
        return fail(args, f"{exc} (backup.host_lock_timeout_seconds sets how long to wait). "
                          f"Nothing was restored. To retry: {retry}", EXIT_FAILED,
                    state_file=name, restored=False)
    facts.update(restored=True, backup=result.name, kept_as=result.kept_as)
    lines.append(f"restored {name} from {result.name}")
    if result.kept_as:
        kept = manager.backup_dir / result.kept_as
        lines.append(f"the replaced file is kept as {shown(kept, config)}; to put it back: "
                     f"cp {arg(kept)} {arg(path)}  (restore never picks it by itself)")
    emit(args, facts, lines)
    return EXIT_OK


def _confirm(name: str, lines: list[str]) -> bool:
    for line in lines:
        out(line)
    try:
        answer = input(f"Replace {name}? [y/N] ").strip().lower()
    except EOFError:
        out("")
        return False
    except BrokenPipeError:
        raise OutputClosed from None
    return answer in ("y", "yes")


def _live(path: Path) -> tuple[str, bytes]:
    try:
        return "file", read_state_file(path)[0]
    except FileNotFoundError:
        return "missing", b""
    except OSError as exc:
        return "unreadable", str(exc).encode()


@contextmanager
def _host_locked(config: dict) -> Iterator[None]:
    """Hold the host's run lock (backup.host_lock) if the config names one: a restore
    never lands in the middle of a daily check. Says so when it has to wait."""
    lock, wait = config.get("host_lock"), config.get("host_lock_timeout")
    if lock is None or not lock.parent.is_dir():
        yield  # no host lock, or no host ever ran here (it creates that folder first)
        return
    what = "DalioLite's run lock (backup.host_lock)"
    with ExitStack() as held:
        try:
            held.enter_context(file_lock(lock, 0.001, what))
        except LockTimeout:
            say(f"waiting up to {wait:g} s for {what} {shown(lock, config)}: a DalioLite "
                "run is in progress, and a restore waits for it to finish")
            held.enter_context(file_lock(lock, wait, what))
        yield


def cmd_verify(manager: BackupManager, args: argparse.Namespace, config: dict) -> int:
    path = resolve(manager, args.state_file, args, config) if args.state_file else None
    report = manager.verify(path, cloud=args.cloud)
    doc = {"ok": report.ok, "checked": len(report.items),
           "problems": [i._asdict() for i in report.problems]}
    lines = [f"checked {len(report.items)} file(s): "
             + ("all ok" if report.ok else f"{len(report.problems)} problem(s)")]
    lines += [f"  {i.status}: {shown(i.location, config)}/{i.name}"
              + (f" ({i.detail})" if i.detail else "") for i in report.problems]
    emit(args, doc, lines)
    return EXIT_OK if report.ok else EXIT_FAILED


def cmd_prune(manager: BackupManager, args: argparse.Namespace, config: dict) -> int:
    plan = manager.prune(dry_run=args.dry_run)
    doc = {"dry_run": args.dry_run, "decisions": [
        {"name": d.name, "keep": d.keep, "reasons": list(d.reasons)} for d in plan]}
    rows = [["keep" if d.keep else ("would remove" if args.dry_run else "removed"), d.name,
             "; ".join(d.reasons)] for d in plan]
    removed = sum(not d.keep for d in plan)
    lines = (table(rows, ["ACTION", "NAME", "REASONS"]) if rows else []) + [
        f"{removed} file(s) {'would be ' if args.dry_run else ''}removed, "
        f"{len(plan) - removed} kept"]
    emit(args, doc, lines)
    return EXIT_OK


def cmd_status(manager: BackupManager, args: argparse.Namespace, config: dict) -> int:
    from .health import split_fix, status_problems
    if args.max_age_hours is not None and not args.max_age_hours > 0:
        raise UsageError(f"--max-age-hours must be a number > 0, got {args.max_age_hours}")
    from .config import host_facts

    host = host_facts(config["hook"], config["path"]) if config["path"] else {}
    if not manager.state_files and host.get("state_files"):
        # The host knows its live files even where the config leaves them out.
        manager.state_files = [Path(p) for p in host["state_files"]]
    doc = manager.status()
    doc["last_backup_error"] = host.get("last_backup_error")
    problems = [dict(zip(("problem", "fix"), split_fix(p), strict=True))
                for p in status_problems(_as_shown(doc, config), args.max_age_hours,
                                         command_prefix(args, config),
                                         host.get("run_command", "the host's daily check"))]
    doc["ok"], doc["problems"] = not problems, problems
    if args.format == "prometheus":
        if args.json:
            raise UsageError("--json and --format prometheus: choose one")
        import time

        from .metrics import backup_bytes, exposition

        sys.stdout.write(exposition(doc, [p["problem"] for p in problems],
                                    backup_bytes(manager, doc), time.time()))
        return EXIT_OK
    if args.format == "json":
        args.json = True
    emit(args, doc, _status_lines(doc, config))
    return EXIT_OK if not problems else EXIT_FAILED


def _status_lines(doc: dict[str, Any], config: dict) -> list[str]:
    from .health import age
    rows = [[s["state_file"], s["newest_valid"] or "NONE", age(s["newest_valid_age_seconds"]),
             f"{s['complete']}/{s['backups']}"] for s in doc["state_files"]]
    lines = table(rows, ["STATE FILE", "NEWEST VALID BACKUP", "AGE", "COMPLETE/ALL"])
    lines.append(f"disk use: {doc['disk_bytes']} bytes in {shown(doc['backup_dir'], config)}")
    for t in doc["targets"]:
        lines.append(f"copies to {shown(t['target'], config)}: {t['pending']} pending"
                     + (f" (oldest {age(t['oldest_pending_age_seconds'])})" if t["pending"]
                        else "") + (f", {t['conflicts']} conflict(s)" if t["conflicts"] else "")
                     + f", last success {t['last_success'] or 'never'}"
                     + (f", last error: {t['last_error']}" if t["last_error"] else ""))
    for t in doc["unconfigured_targets"]:
        lines.append(f"copies to {t['target']} (no longer configured): {t['pending']} pending")
    if doc["last_backup_error"]:
        lines.append(f"last backup error recorded by DalioLite: {doc['last_backup_error']}")
    for p in doc["problems"]:
        lines += [f"PROBLEM: {p['problem']}", f"  fix: {p['fix']}"]
    lines.append("status: OK" if doc["ok"] else f"status: PROBLEM ({len(doc['problems'])})")
    return lines


def _as_shown(doc: dict[str, Any], config: dict) -> dict[str, Any]:
    """Status facts with paths as a person reads them in the text (the JSON document
    keeps them absolute): state files relative to the config's folder (what the
    fix commands take), the backups folder as a command names it from here."""
    return {**doc, "backup_dir": arg(doc["backup_dir"]),
            "state_files": [{**s, "path": s["path"] and shown(s["path"], config)}
                            for s in doc["state_files"]],
            "targets": [{**t, "target": shown(t["target"], config)} for t in doc["targets"]]}


def cmd_sync(manager: BackupManager, args: argparse.Namespace, config: dict) -> int:
    from .health import unconfigured_copies
    if args.forget:
        return _forget(manager, args, config)
    terminal = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        if args.json or total <= 3:
            return
        if terminal:  # one line, rewritten in place
            say(f"\rsync: {done}/{total} copies tried", end="\n" if done == total else "")
        elif done % SYNC_PROGRESS_EVERY == 0 or done == total:  # cron logs: whole lines
            say(f"sync: {done}/{total} copies tried")

    result = manager.sync(progress=progress)
    stray = unconfigured_copies(manager.outbox.pending(), manager.copier.targets,
                                datetime.now(UTC))
    doc = {"copied": result.copied, "pending": result.pending, "errors": result.errors,
           "unconfigured_targets": stray}
    lines = [f"copied {result.copied}, pending {result.pending}"]
    lines += [f"  error: {e}" for e in result.errors]
    lines += [f"  {t['pending']} of them owed to {t['target']}, which is no longer "
              f"configured: configure it again, or drop them on purpose: "
              f"{command_prefix(args, config)} sync --forget {t['target']}" for t in stray]
    emit(args, doc, lines)
    return EXIT_OK if result.pending == 0 and not result.errors else EXIT_FAILED


def _forget(manager: BackupManager, args: argparse.Namespace, config: dict) -> int:
    """Drop copies owed to one target on purpose: all of them when it is no longer
    configured, the conflicting ones (never retried) when it is."""
    targets = manager.copier.targets
    by_label = {shown(t.label, config): t_id for t_id, t in targets.items()}
    by_label.update((t.label, t_id) for t_id, t in targets.items())
    target = by_label.get(args.forget, args.forget)
    if not target or "/" in target or target in (".", ".."):
        raise UsageError(f"--forget takes a target as status shows it, got {args.forget!r}")
    configured = target in targets
    with manager.folder.locked():
        owed = [c for c in manager.outbox.pending(target) if c.conflict or not configured]
        if not owed:
            known = sorted({c.target for c in manager.outbox.pending()})
            raise UsageError(
                f"nothing to forget for {args.forget}: " + (
                    "it is configured and none of its copies is a conflict" if configured
                    else "no copies are owed to it") +
                f" (copies are owed to: {', '.join(known) or 'no target'})")
        for copy in owed:
            manager.outbox.forget(target, copy.name)
    label = target if not configured else shown(targets[target].label, config)
    what = "conflicting copy(ies)" if configured else "copy(ies)"
    emit(args, {"target": label, "configured": configured, "forgot": [c.name for c in owed]},
         [f"forgot {len(owed)} {what} owed to {label}"
          + ("" if configured else " (no longer configured)") + ": "
          + ", ".join(c.name for c in owed)])
    return EXIT_OK


def cmd_drill(manager: BackupManager, args: argparse.Namespace, config: dict) -> int:
    from .drill import drill

    targets = state_files(manager)
    doc = drill(manager, targets, cloud=args.cloud)
    rows = [[shown(d["state_file"], config), d["backup"] or "-", d["source"] or "-",
             f"{d['seconds'] * 1000:.0f} ms", "ok" if d["ok"] else "FAILED"] for d in doc]
    failed = [d for d in doc if not d["ok"]]
    lines = table(rows, ["STATE FILE", "BACKUP", "SOURCE", "TIME TO RECOVER", "RESULT"]) + [
        f"  {shown(d['state_file'], config)}: {d['error']}" for d in failed] + [
        "drill: every state file can be recovered" if not failed
        else f"drill: {len(failed)} state file(s) cannot be recovered"]
    emit(args, {"ok": not failed, "state_files": doc}, lines if targets else
         ["drill: no state files configured and no backups found"])
    return EXIT_OK if targets and not failed else EXIT_FAILED


COMMANDS = {"list": cmd_list, "backup": cmd_backup, "restore": cmd_restore, "verify": cmd_verify,
            "prune": cmd_prune, "status": cmd_status, "sync": cmd_sync, "drill": cmd_drill}
