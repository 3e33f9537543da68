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
from .manager import BackupManager
from .points import Point, PointKind
from .store import fetch_verified

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
    from .problems import age
    if args.points:
        if args.state_file:
            raise UsageError("list --points shows the whole history: name no STATE_FILE")
        return _list_points(manager, args, config)
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


def _intent_end(intent: Point, ender: Point | None) -> str:
    """How an intent ended, in words: the point that settled it and what it found."""
    if ender is None:
        return "NOT SETTLED (the next daily check asks the broker what became of its orders)"
    if ender.details.get("void"):
        return f"void: no order was placed (settled by {ender.sequence})"
    ids = {o.get("client_order_id") for o in intent.details.get("orders", ())}
    if "placed" not in ender.details:
        return f"every order placed (settled by {ender.sequence})"
    placed = len(ids & set(ender.details["placed"]))
    rejected = len(ids & set(ender.details.get("rejected", ())))
    return f"{placed} placed, {rejected} rejected, {len(ids) - placed - rejected} never " \
           f"placed (settled by {ender.sequence})"


def _list_points(manager: BackupManager, args: argparse.Namespace, config: dict) -> int:
    """The history: every restore point any store holds, newest first."""
    history = manager.history()
    labels = {location: shown(store.label, config) for location, store in manager.sources()}
    doc, rows = [], []
    settled_by = {n: p for p in map(history.point, history.locations) if p is not None
                  for n in p.details.get("settles", ())}
    for number in sorted(history.locations, reverse=True):
        point = history.point(number)
        where = [labels.get(loc, loc) for loc in history.where(number)]
        if point is None:
            doc.append({"sequence": number, "damaged": history.damaged.get(number),
                        "stores": where})
            rows.append([number, "-", "DAMAGED", "-", "-", ", ".join(where),
                         history.damaged.get(number, "")])
            continue
        doc.append({"sequence": number, "time": point.time.isoformat(), "kind": point.kind,
                    "writer": point.writer, "reason": point.reason,
                    "follows": point.follows[0] if point.follows else None,
                    "files": {n: e and e.backup for n, e in point.files.items()},
                    "details": point.details, "stores": where})
        why = point.reason
        if point.kind == PointKind.ORDERS:
            ender = settled_by.get(number)
            doc[-1]["settled_by"] = ender and ender.sequence
            why += f"; {_intent_end(point, ender)}"
        rows.append([number, f"{point.time:%Y-%m-%d %H:%M:%S}", point.kind, point.writer,
                     point.follows[0] if point.follows else "-", ", ".join(where), why])
    lines = table(rows, ["POINT", "TIME (UTC)", "KIND", "WRITER", "FOLLOWS", "STORES",
                         "WHY"]) if rows else ["no restore points yet"]
    lines += [f"could not be seen: {labels.get(loc, loc)} ({why})"
              for loc, why in history.unseen.items()]
    emit(args, {"points": doc, "unseen": history.unseen}, lines)
    return EXIT_OK if not history.unseen else EXIT_FAILED


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
    if args.all:
        if args.state_file:
            raise UsageError("restore --all installs every state file: name none")
        return _restore_all(manager, args, config)
    if args.point is not None:
        raise UsageError("--point goes with --all; for one file use --timestamp")
    if not args.state_file:
        raise UsageError("restore needs a STATE_FILE, or --all")
    path = resolve(manager, args.state_file, args, config)
    name = shown(path, config)
    try:
        planned = manager.plan_restore(path, timestamp=args.timestamp, source=args.source,
                                       from_reachable=args.from_reachable)
    except NoValidBackupError as exc:
        return fail(args, str(exc), EXIT_FAILED, state_file=name, restored=False)
    plan = manager.install_restore(planned, dry_run=True)
    facts = {"state_file": name, "backup": plan.name, "source": plan.location,
             "time": plan.timestamp.isoformat(), "replaces": plan.replaced,
             "changed": plan.changed, "dry_run": args.dry_run, "restored": False,
             "point": plan.point, "newest_point": plan.newest_point, "behind": plan.behind}
    if planned.current:
        lines = [f"{name} already holds the newest restore point's ({plan.point}) bytes: "
                 "nothing to do"]
        damaged = manager.entry_data(planned.newest, path.name) is None
        if damaged:
            lines.append(f"that point's backup {plan.name} is damaged or missing everywhere; "
                         f"repair it from the live file: {command_prefix(args, config)} "
                         f"backup {state_arg(path, config)}")
        facts.update(backup_damaged=damaged)
        emit(args, facts, lines)
        return EXIT_OK
    lines = [f"backup:   {plan.name} ({plan.location}, {plan.timestamp:%Y-%m-%d %H:%M:%S} UTC)",
             f"replaces: {REPLACES[plan.replaced]}" if plan.changed else
             "replaces: nothing: the file already holds this backup"]
    lines += _standing(manager, planned, plan, args, config)
    if not plan.changed or args.dry_run:
        emit(args, facts, lines + ([] if plan.changed else ["nothing to do"]))
        return EXIT_OK
    retry = f"{command_prefix(args, config)} restore {state_arg(path, config)}" + (
        f" --timestamp {args.timestamp}" if args.timestamp else "") + (
        f" --from {args.source}" if args.source != "auto" else "") + (
        " --from-reachable" if args.from_reachable else "") + (
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


def _standing(manager: BackupManager, planned: Any, result: Any, args: argparse.Namespace,
              config: dict) -> list[str]:
    """Where the chosen bytes stand against the newest restore point, and what the host
    will do about it, for a person about to install them."""
    if result.newest_point is None:
        return []
    if result.point is None:
        return ["history:  no restore point names these bytes; the next DalioLite run takes "
                "them as new state if they are not older than the newest point "
                f"({result.newest_point}), and refuses if they are"]
    if not result.behind:
        return [f"history:  the newest restore point's ({result.newest_point}) state"]
    newest = planned.newest
    lines = [f"history:  a ROLLBACK: restore point {result.point}, {result.behind} point(s) "
             f"older than the newest ({newest.sequence}, {newest.time:%Y-%m-%d %H:%M} UTC)"]
    from .content import content_time
    was = manager.entry_data(newest, planned.path.name)
    now, then = content_time(planned.path.name, planned.chosen.data), \
        content_time(planned.path.name, was) if was is not None else None
    if now is not None and then is not None and now != then:
        lines.append(f"          {planned.path.name} then records {now:%Y-%m-%d}, "
                     f"{abs((then - now).days)} day(s) {'before' if now < then else 'after'} "
                     f"the newest point's {then:%Y-%m-%d}")
    from .config import host_facts
    run = host_facts(config.get("hook"), config["path"]).get("run_command") \
        if config.get("path") else None
    ack = f"{run} --accept-rollback" if run else "the host's --accept-rollback"
    lines.append(f"          DalioLite refuses to trade until you acknowledge it: {ack}; "
                 f"to undo it before then: {command_prefix(args, config)} restore "
                 f"{state_arg(planned.path, config)} --yes")
    return lines


def _restore_all(manager: BackupManager, args: argparse.Namespace, config: dict) -> int:
    try:
        plan = manager.plan_restore_all(point=args.point, timestamp=args.timestamp,
                                        source=args.source, from_reachable=args.from_reachable)
    except NoValidBackupError as exc:
        return fail(args, str(exc), EXIT_FAILED, restored=False)
    point, newest = plan.point, plan.newest
    previews = manager.install_point(plan, dry_run=True)
    changing = [r for r in previews if r.changed]
    lines = [f"restore point {point.sequence} ({point.kind}, {point.time:%Y-%m-%d %H:%M:%S} "
             f"UTC, writer {point.writer}): {point.reason}"]
    if point.sequence != newest.sequence:
        lines.append(f"a ROLLBACK: {newest.sequence - point.sequence} point(s) older than the "
                     f"newest ({newest.sequence}); DalioLite refuses to trade until you "
                     "acknowledge it with --accept-rollback")
    for path, result in zip([p for p in manager.state_files if p.name in plan.chosen],
                            previews, strict=True):
        lines.append(f"  {shown(path, config)}: {result.name}"
                     + ("" if result.changed else " (already holds it)"))
    for name in plan.not_configured:
        lines.append(f"  {name}: named by the point, not a configured state file: left out")
    facts = {"point": point.sequence, "newest_point": newest.sequence, "dry_run": args.dry_run,
             "files": {r.name: r.changed for r in previews}, "restored": False}
    if args.dry_run or not changing:
        emit(args, facts, lines + ([] if changing else ["nothing to do"]))
        return EXIT_OK
    if any(r.replaced == "valid" for r in changing) and not args.yes:
        if args.json or not sys.stdin.isatty():
            return fail(args, "valid state files would be replaced; refusing without "
                              "confirmation: add --yes", EXIT_USAGE)
        if not _confirm(f"the state files with restore point {point.sequence}", lines):
            say("not restored")
            return EXIT_FAILED
        lines = []
    try:
        with _host_locked(config):
            results = manager.install_point(plan)
    except LockTimeout as exc:
        return fail(args, f"{exc}. Nothing was restored.", EXIT_FAILED, restored=False)
    facts.update(restored=True, kept_as=[r.kept_as for r in results if r.kept_as])
    lines.append(f"restored restore point {point.sequence} into "
                 f"{sum(r.changed for r in results)} state file(s)")
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
    from .problems import status_problems
    if args.max_age_hours is not None and not args.max_age_hours > 0:
        raise UsageError(f"--max-age-hours must be a number > 0, got {args.max_age_hours}")
    from .config import host_facts

    host = host_facts(config["hook"], config["path"]) if config["path"] else {}
    if not manager.state_files and host.get("state_files"):
        # The host knows its live files even where the config leaves them out.
        manager.state_files = [Path(p) for p in host["state_files"]]
    doc = manager.status()
    doc["last_backup_error"] = host.get("last_backup_error")
    problems = [{"subject": p.subject, "kind": str(p.kind), "problem": p.what, "fix": p.fix}
                for p in status_problems(_as_shown(doc, config), args.max_age_hours,
                                         command_prefix(args, config),
                                         host.get("run_command", "the host's daily check"))]
    doc["ok"], doc["problems"] = not problems, problems
    if args.format == "prometheus":
        if args.json:
            raise UsageError("--json and --format prometheus: choose one")
        import time

        from .metrics import backup_bytes, exposition

        sys.stdout.write(exposition(doc, [(p["kind"], p["subject"]) for p in problems],
                                    backup_bytes(manager, doc), time.time()))
        return EXIT_OK
    if args.format == "json":
        args.json = True
    emit(args, doc, _status_lines(doc, config))
    return EXIT_OK if not problems else EXIT_FAILED


def _status_lines(doc: dict[str, Any], config: dict) -> list[str]:
    from .problems import age
    rows = [[s["state_file"], s["newest_valid"] or "NONE", age(s["newest_valid_age_seconds"]),
             f"{s['complete']}/{s['backups']}"] for s in doc["state_files"]]
    lines = table(rows, ["STATE FILE", "NEWEST VALID BACKUP", "AGE", "COMPLETE/ALL"])
    lines.append(f"disk use: {doc['disk_bytes']} bytes in {shown(doc['backup_dir'], config)}")
    points = doc["points"]
    if points["newest"] is not None and not points["newest_damaged"]:
        lines.append(f"restore points: {points['count']} in backups; newest {points['newest']} "
                     f"({points['kind']}, {points['time'][:19]} UTC, writer {points['writer']})")
    elif points["newest"] is None:
        lines.append("restore points: none yet (the next daily check commits the first)")
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
    refused = (doc.get("recovery") or {}).get("refused")
    for p in doc["problems"]:
        if p["kind"] == "host-refuses" and refused:
            # The refusal's own shape: its headline, a reason a line, numbered commands.
            lines.append(f"PROBLEM: the host refuses to trade: {refused['headline']}")
            lines += [f"  {subject}: {why}" for subject, why in refused["reasons"]]
            lines.append("  fix, one of:")
            lines += [f"    {n}. {c}" for n, c in enumerate(refused["commands"], 1)]
            continue
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
    from .status import unconfigured_copies
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
        manager.copier.claim()  # a queue another store was owed is set aside first
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
