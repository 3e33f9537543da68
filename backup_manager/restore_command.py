"""The restore command: one state file from the newest restore point that verifies
(or a named backup), or every state file with one point (--all); it shows what it will
install and what that means for the history first, asks before replacing valid state,
and waits for a running daily check (the host's run lock).
"""

from __future__ import annotations

import sys

from .atomic import read_state_file
from .console import (
    AS_GIVEN_HELP,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    OutputClosed,
    UsageError,
    emit,
    fail,
    out,
    resolve,
    say,
)
from .errors import LockTimeout, NoValidBackupError

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    import argparse
    from pathlib import Path
    from typing import Any

    from .site import Site


def restore_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("--path-as-given", action="store_true", help=AS_GIVEN_HELP)
    c.add_argument("state_file", nargs="?", metavar="STATE_FILE")
    c.add_argument("--all", action="store_true",
                   help="install one restore point into every state file (the newest "
                        "whose backups all verify, unless --point or --timestamp)")
    c.add_argument("--point", type=int, metavar="N", help="with --all: restore point N")
    c.add_argument("--timestamp", help="newest backup (with --all: restore point) whose "
                                       "timestamp starts with this")
    c.add_argument("--from-reachable", action="store_true",
                   help="install from the stores that answer even when another cannot "
                        "be seen (it may hold newer state)")
    c.add_argument("--from", dest="source", choices=("auto", "local", "cloud"),
                   default="auto")
    c.add_argument("--dry-run", action="store_true", help="show what would happen")
    c.add_argument("--yes", action="store_true", help="replace a valid state without asking")


REPLACES = {None: "nothing (the file is missing)",
            "valid": "a valid file, kept under backups/replaced/ unless a backup holds it",
            "invalid": "an invalid file, which will be kept under backups/corrupt/"}


def cmd_restore(site: Site, args: argparse.Namespace) -> int:
    manager = site.manager
    if args.all:
        if args.state_file:
            raise UsageError("restore --all installs every state file: name none")
        return _restore_all(site, args)
    if args.point is not None:
        raise UsageError("--point goes with --all; for one file use --timestamp")
    if not args.state_file:
        raise UsageError("restore needs a STATE_FILE, or --all")
    path = resolve(site, args.state_file, args)
    name = site.shown(path)
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
                         f"repair it from the live file: {site.command('')} "
                         f"backup {site.state_arg(path)}")
        facts.update(backup_damaged=damaged)
        emit(args, facts, lines)
        return EXIT_OK
    lines = [f"backup:   {plan.name} ({plan.location}, {plan.timestamp:%Y-%m-%d %H:%M:%S} UTC)",
             f"replaces: {REPLACES[plan.replaced]}" if plan.changed else
             "replaces: nothing: the file already holds this backup"]
    lines += _standing(site, planned, plan)
    if not plan.changed or args.dry_run:
        emit(args, facts, lines + ([] if plan.changed else ["nothing to do"]))
        return EXIT_OK
    retry = f"{site.command('')} restore {site.state_arg(path)}" + (
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
        with site.host_locked(say):
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
        lines.append(f"the replaced file is kept as {site.shown(kept)}; to put it back: "
                     f"cp {site.arg(kept)} {site.arg(path)}  (restore never picks it by itself)")
    emit(args, facts, lines)
    return EXIT_OK


def _standing(site: Site, planned: Any, result: Any) -> list[str]:
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
    was = site.manager.entry_data(newest, planned.path.name)
    now, then = content_time(planned.path.name, planned.chosen.data), \
        content_time(planned.path.name, was) if was is not None else None
    if now is not None and then is not None and now != then:
        lines.append(f"          {planned.path.name} then records {now:%Y-%m-%d}, "
                     f"{abs((then - now).days)} day(s) {'before' if now < then else 'after'} "
                     f"the newest point's {then:%Y-%m-%d}")
    ack = site.host_command("--accept-rollback")
    lines.append(f"          DalioLite refuses to trade until you acknowledge it: {ack}; "
                 f"to undo it before then: {site.command('')} restore "
                 f"{site.state_arg(planned.path)} --yes")
    return lines


def _restore_all(site: Site, args: argparse.Namespace) -> int:
    manager = site.manager
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
        lines.append(f"  {site.shown(path)}: {result.name}"
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
        with site.host_locked(say):
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
