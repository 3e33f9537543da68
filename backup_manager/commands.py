"""The commands that read and keep backups: list, backup, verify, prune and drill.

Each command is two functions side by side: `NAME_arguments(parser)` adds its
arguments, `cmd_NAME(site, args)` carries it out and returns the exit code; cli.py
holds the table of commands. Output goes through console.py.
"""

from __future__ import annotations

from datetime import UTC, datetime

from .console import (
    AS_GIVEN_HELP,
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    emit,
    resolve,
    state_files,
    table,
)
from .errors import BackupError
from .points import Point, PointKind

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from .site import Site


# --- list ------------------------------------------------------------------------------


def list_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("--path-as-given", action="store_true", help=AS_GIVEN_HELP)
    c.add_argument("state_file", nargs="?", metavar="STATE_FILE")
    c.add_argument("--points", action="store_true",
                   help="the restore points (the history) instead of backups")


def cmd_list(site: Site, args: argparse.Namespace) -> int:
    manager = site.manager
    from .problems import age
    if args.points:
        if args.state_file:
            raise UsageError("list --points shows the whole history: name no STATE_FILE")
        return _list_points(site, args)
    now = datetime.now(UTC)
    remote, pending = manager.cloud_view()
    doc, lines = [], []
    for path in state_files(site, args.state_file, args):
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
        doc.append({"state_file": site.shown(path), "backups": entries})
        lines.append(f"{site.shown(path)}: {len(rows)} backup(s) in "
                     f"{site.shown(manager.backup_dir)}")
        if rows:
            lines += ["  " + ln for ln in table(rows, ["NAME", "TIME (UTC)", "AGE", "SIZE",
                                                       "STATUS", "CLOUD"])]
    emit(args, doc, lines or [f"no backups in {site.shown(manager.backup_dir)}"])
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


def _list_points(site: Site, args: argparse.Namespace) -> int:
    """The history: every restore point any store holds, newest first."""
    manager = site.manager
    history = manager.history()
    labels = {location: site.shown(store.label) for location, store in manager.sources()}
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


def _health(manager: Any, info: Any) -> str:
    if not info.complete:
        return "incomplete"
    return "ok" if manager.backup_verifies(info.name) else "damaged"


# --- backup ----------------------------------------------------------------------------


def backup_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("--path-as-given", action="store_true", help=AS_GIVEN_HELP)
    c.add_argument("state_files", nargs="+", metavar="STATE_FILE")


def cmd_backup(site: Site, args: argparse.Namespace) -> int:
    paths = [resolve(site, name, args) for name in args.state_files]
    made, lines, failed = [], [], False
    for path in paths:
        name = site.shown(path)
        try:
            backup = site.manager.backup_state_file(path)
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


# --- verify ----------------------------------------------------------------------------


def verify_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("--path-as-given", action="store_true", help=AS_GIVEN_HELP)
    c.add_argument("state_file", nargs="?", metavar="STATE_FILE")
    c.add_argument("--cloud", action="store_true", help="also check the copies in S3")


def cmd_verify(site: Site, args: argparse.Namespace) -> int:
    path = resolve(site, args.state_file, args) if args.state_file else None
    report = site.manager.verify(path, cloud=args.cloud)
    doc = {"ok": report.ok, "checked": len(report.items),
           "problems": [i._asdict() for i in report.problems]}
    lines = [f"checked {len(report.items)} file(s): "
             + ("all ok" if report.ok else f"{len(report.problems)} problem(s)")]
    lines += [f"  {i.status}: {site.shown(i.location)}/{i.name}"
              + (f" ({i.detail})" if i.detail else "") for i in report.problems]
    if report.bucket is not None:
        doc["bucket"] = report.bucket
        lines += bucket_lines(report.bucket)
    emit(args, doc, lines)
    return EXIT_OK if report.ok else EXIT_FAILED


def bucket_lines(bucket: dict[str, Any]) -> list[str]:
    """The bucket's protection, and its newest point's lock, as verify --cloud says it."""
    from .objectlock import protection_lines
    lines = [f"bucket: {line}" for line in protection_lines(bucket)]
    newest, lock = bucket.get("newest_point"), bucket.get("newest_point_lock")
    if newest:
        lines.append(f"bucket: newest restore point {newest}: " + (
            f"locked {lock['mode']} until {lock['retain_until'][:19]} UTC" if lock else
            "not locked"))
    return lines


# --- prune -----------------------------------------------------------------------------


def prune_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("--dry-run", action="store_true", help="show the plan, delete nothing")


def cmd_prune(site: Site, args: argparse.Namespace) -> int:
    plan = site.manager.prune(dry_run=args.dry_run)
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


def _drill_key(site: Site) -> list[dict[str, Any]]:
    """With a key, drill --cloud also proves the key opens the newest point in S3."""
    from .key_check import check_key
    from .seal import signed
    if site.manager.cloud is None or not signed(site.manager.cloud):
        return []
    return check_key(site.manager, cloud_only=True)


# --- drill -----------------------------------------------------------------------------


def drill_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("--cloud", action="store_true", help="recover from S3 alone")


def cmd_drill(site: Site, args: argparse.Namespace) -> int:
    targets = state_files(site)
    from .drill import rehearse

    doc = rehearse(site.manager, targets, cloud=args.cloud)
    rows = [[site.shown(d["state_file"]), d["backup"] or "-", d["source"] or "-",
             f"{d['seconds'] * 1000:.0f} ms", "ok" if d["ok"] else "FAILED"] for d in doc]
    failed = [d for d in doc if not d["ok"]]
    keys = _drill_key(site) if args.cloud else []
    failed += [k for k in keys if not k["ok"]]
    rows += [[f"key: {site.shown(k['store'])}", f"point {k['point'] or '-'}", "-", "-",
              "ok" if k["ok"] else "FAILED"] for k in keys]
    lines = table(rows, ["STATE FILE", "BACKUP", "SOURCE", "TIME TO RECOVER", "RESULT"]) + [
        f"  {site.shown(d['state_file'])}: {d['error']}" for d in failed
        if "state_file" in d] + [f"  key check: {k['detail']}" for k in keys if not k["ok"]] + [
        "drill: every state file can be recovered" if not failed
        else f"drill: {len(failed)} state file(s) cannot be recovered"]
    emit(args, {"ok": not failed, "state_files": doc, "key_check": keys}, lines if targets else
         ["drill: no state files configured and no backups found"])
    return EXIT_OK if targets and not failed else EXIT_FAILED
