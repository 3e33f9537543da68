"""The commands about the health of the backups and their copies: status (for people,
cron, monitors and Prometheus) and sync (send every copy owed now, or drop some on
purpose).
"""

from __future__ import annotations

import sys

from .console import EXIT_FAILED, EXIT_OK, UsageError, emit, say, table

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from .site import Site

SYNC_PROGRESS_EVERY = 10  # without a terminal: one progress line per this many copies


def status_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("--max-age-hours", type=float, metavar="H",
                   help="exit 1 when the newest valid backup or a pending upload is older")
    c.add_argument("--format", choices=("text", "json", "prometheus"),
                   help="text (default), json (as --json) or prometheus: the text "
                        "exposition format for node_exporter's textfile collector "
                        "(exit 0 whenever it is printed: health is in the metrics)")


def cmd_status(site: Site, args: argparse.Namespace) -> int:
    if args.max_age_hours is not None and not args.max_age_hours > 0:
        raise UsageError(f"--max-age-hours must be a number > 0, got {args.max_age_hours}")
    from .site import facts_view

    doc = site.status(args.max_age_hours, view=facts_view(site))
    problems = doc["problems"]
    if args.format == "prometheus":
        if args.json:
            raise UsageError("--json and --format prometheus: choose one")
        import time

        from .metrics import backup_bytes, exposition

        sys.stdout.write(exposition(doc, [(p["kind"], p["subject"]) for p in problems],
                                    backup_bytes(site.manager, doc), time.time()))
        return EXIT_OK
    if args.format == "json":
        args.json = True
    emit(args, doc, _status_lines(doc, site))
    return EXIT_OK if not problems else EXIT_FAILED


def _status_lines(doc: dict[str, Any], site: Site) -> list[str]:
    from .objectlock import protection_lines
    from .problems import age
    rows = [[s["state_file"], s["newest_valid"] or "NONE", age(s["newest_valid_age_seconds"]),
             f"{s['complete']}/{s['backups']}"] for s in doc["state_files"]]
    lines = table(rows, ["STATE FILE", "NEWEST VALID BACKUP", "AGE", "COMPLETE/ALL"])
    lines.append(f"disk use: {doc['disk_bytes']} bytes in {site.shown(doc['backup_dir'])}")
    points = doc["points"]
    if points["newest"] is not None and not points["newest_damaged"]:
        lines.append(f"restore points: {points['count']} in backups; newest {points['newest']} "
                     f"({points['kind']}, {points['time'][:19]} UTC, writer {points['writer']})")
    elif points["newest"] is None:
        lines.append("restore points: none yet (the next daily check commits the first)")
    for t in doc["targets"]:
        lines.append(f"copies to {site.shown(t['target'])}: {t['pending']} pending"
                     + (f" (oldest {age(t['oldest_pending_age_seconds'])})" if t["pending"]
                        else "") + (f", {t['conflicts']} conflict(s)" if t["conflicts"] else "")
                     + f", last success {t['last_success'] or 'never'}"
                     + (f", last error: {t['last_error']}" if t["last_error"] else ""))
        if t.get("protection"):
            lines += [f"  bucket: {line}" for line in protection_lines(t["protection"])]
    if doc.get("copies_signed") is False:
        lines.append("copies in mirrors and S3 are not authenticated: anyone who can write "
                     "there can plant a backup that restore takes (backup.key_file signs "
                     "them; README, Keys)")
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


def sync_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("--forget", metavar="TARGET",
                   help="drop, on purpose, the copies owed to TARGET (as status shows "
                        "it): all of them for a target no longer configured, the "
                        "conflicting ones for a configured target; sends nothing")


def cmd_sync(site: Site, args: argparse.Namespace) -> int:
    manager = site.manager
    if args.forget:
        return _forget(site, args)
    terminal = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        if args.json or total <= 3:
            return
        if terminal:  # one line, rewritten in place
            say(f"\rsync: {done}/{total} copies tried", end="\n" if done == total else "")
        elif done % SYNC_PROGRESS_EVERY == 0 or done == total:  # cron logs: whole lines
            say(f"sync: {done}/{total} copies tried")

    result = manager.sync(progress=progress)
    stray = manager.unconfigured_copies()
    doc = {"copied": result.copied, "pending": result.pending, "errors": result.errors,
           "unconfigured_targets": stray}
    lines = [f"copied {result.copied}, pending {result.pending}"]
    lines += [f"  error: {e}" for e in result.errors]
    lines += [f"  {t['pending']} of them owed to {t['target']}, which is no longer "
              f"configured: configure it again, or drop them on purpose: "
              f"{site.command('')} sync --forget {t['target']}" for t in stray]
    emit(args, doc, lines)
    return EXIT_OK if result.pending == 0 and not result.errors else EXIT_FAILED


def _forget(site: Site, args: argparse.Namespace) -> int:
    """Drop copies owed to one target on purpose: all of them when it is no longer
    configured, the conflicting ones (never retried) when it is."""
    manager = site.manager
    targets = manager.copy_targets()
    by_label = {site.shown(label): t_id for t_id, label in targets.items()}
    by_label.update((label, t_id) for t_id, label in targets.items())
    target = by_label.get(args.forget, args.forget)
    if not target or "/" in target or target in (".", ".."):
        raise UsageError(f"--forget takes a target as status shows it, got {args.forget!r}")
    configured = target in targets
    owed = manager.forget_copies(target)
    if not owed:
        known = sorted({c.target for c in manager.pending_copies()})
        raise UsageError(
            f"nothing to forget for {args.forget}: " + (
                "it is configured and none of its copies is a conflict" if configured
                else "no copies are owed to it") +
            f" (copies are owed to: {', '.join(known) or 'no target'})")
    label = target if not configured else site.shown(targets[target])
    what = "conflicting copy(ies)" if configured else "copy(ies)"
    emit(args, {"target": label, "configured": configured, "forgot": owed},
         [f"forgot {len(owed)} {what} owed to {label}"
          + ("" if configured else " (no longer configured)") + ": " + ", ".join(owed)])
    return EXIT_OK
