"""The operator's command line: python -m backup_manager [--config PATH] [--json] COMMAND.

Exit codes: 0 ok; 1 a check failed or nothing valid to restore; 2 usage or
configuration error. Expected errors print one line naming the problem and the
fix, never a traceback.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

from . import log
from .copies import CLOUD_TARGET
from .errors import BackupError, ConfigError, NoValidBackupError
from .formats import fetch_verified
from .health import age, status_problems
from .manager import BackupManager

# argparse and json are imported where needed: `import backup_manager` loads neither.
TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    import argparse
    from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
GLOBAL_DEFAULTS = {"config": None, "backup_dir": None, "json": False, "verbose": False}


class UsageError(Exception):
    """A command line that cannot be carried out as given."""


def _arguments_of(command: str, c: argparse.ArgumentParser) -> None:
    if command == "list":
        c.add_argument("state_file", nargs="?")
    elif command == "backup":
        c.add_argument("state_files", nargs="+", metavar="STATE_FILE")
    elif command == "restore":
        c.add_argument("state_file")
        c.add_argument("--timestamp", help="newest backup whose timestamp starts with this")
        c.add_argument("--from", dest="source", choices=("auto", "local", "cloud"),
                       default="auto")
        c.add_argument("--dry-run", action="store_true", help="show what would happen")
        c.add_argument("--yes", action="store_true", help="replace a valid state without asking")
    elif command in ("verify", "drill"):
        c.add_argument("--cloud", action="store_true",
                       help="also check the copies in S3" if command == "verify"
                       else "recover from S3 alone")
    elif command == "prune":
        c.add_argument("--dry-run", action="store_true", help="show the plan, delete nothing")
    elif command == "status":
        c.add_argument("--max-age-hours", type=float, metavar="H",
                       help="exit 1 when the newest valid backup or a pending upload is older")
        c.add_argument("--format", choices=("text", "json", "prometheus"),
                       help="text (default), json (as --json) or prometheus: the text "
                            "exposition format for node_exporter's textfile collector "
                            "(exit 0 whenever it is printed: health is in the metrics)")


HELP = {
    "list": "backups per state file",
    "backup": "back up state files now",
    "restore": "restore a state file from its newest valid backup",
    "verify": "check every backup; exit 1 on any problem",
    "prune": "apply the retention plan",
    "status": "backup health for cron and monitors",
    "sync": "upload every pending copy now",
    "drill": "rehearse recovery into a temporary folder",
}


def build_parser() -> argparse.ArgumentParser:
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m backup_manager",
        description="DalioLite state backups: list, back up, restore, verify, prune, "
                    "check health, sync to the cloud and rehearse disaster recovery.")
    p.add_argument("--config", help="config.yaml to read (default: ./config.yaml if present)")
    p.add_argument("--backup-dir", help="backups folder (overrides the config)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    p.set_defaults(**GLOBAL_DEFAULTS)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command, text in HELP.items():
        _arguments_of(command, sub.add_parser(command, help=text))
    return p


def plain_backup(argv: list[str]) -> SimpleNamespace | None:
    """The arguments of the cron line `backup FILE...` (no options), as argparse would
    give them; None for anything else.

    Kept for the whole-process target (README, Benchmarks: at most 1.5x `python -c
    pass`): argparse costs the cron line 5.7-6.7 ms, 1.76-1.81x instead of 1.44x
    (bench/process.py, rows `backup` and `backup -- FILE`, three runs)."""
    if len(argv) < 2 or argv[0] != "backup" or any(a.startswith("-") for a in argv[1:]):
        return None
    return SimpleNamespace(command="backup", state_files=argv[1:], **GLOBAL_DEFAULTS)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = plain_backup(argv) or build_parser().parse_args(argv)
    if args.verbose:
        import logging

        logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s",
                            stream=sys.stderr)
    try:
        manager, config = open_manager(args)
        return COMMANDS[args.command](manager, args, config)
    except (UsageError, ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


def open_manager(args: argparse.Namespace) -> tuple[BackupManager, dict[str, Any]]:
    config_path = args.config or ("config.yaml" if os.path.exists("config.yaml") else None)
    config: dict[str, Any] = {}
    overrides = {"backup_dir": Path(args.backup_dir)} if args.backup_dir else {}
    if config_path is None:
        return BackupManager(**overrides), {}
    if not os.path.isfile(config_path):
        raise UsageError(f"config file {config_path} does not exist")
    from .config import load_config_file

    config = load_config_file(config_path)
    base = Path(config_path).resolve().parent
    manager = BackupManager.from_config({k: v for k, v in config.items() if k == "backup"},
                                        base_dir=base, **overrides)
    return manager, {"path": Path(config_path).resolve(), "hook": _status_hook(config)}


def _status_hook(config: dict[str, Any]) -> str | None:
    """`status_hook` of the config's backup section: the host's "module:function"
    that `status` asks for what the host recorded (a mapping such as
    {"last_backup_error": ...}); it is passed the config file's path."""
    hook = (config.get("backup") or {}).get("status_hook")
    if hook is not None and (not isinstance(hook, str) or hook.count(":") != 1):
        raise ConfigError(f"backup.status_hook must be 'module:function', got {hook!r}")
    return hook


def emit(args: argparse.Namespace, doc: Any, lines: list[str]) -> None:
    if args.json:
        import json

        json.dump(doc, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        for line in lines:
            print(line)


def table(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*header).rstrip()] + [fmt.format(*map(str, r)).rstrip() for r in rows]


def state_files(manager: BackupManager, given: str | None = None) -> list[Path]:
    """The state files a command covers: the one given, the configured ones, or every
    state file with backups in the folder."""
    if given:
        return [Path(given)]
    if manager.state_files:
        return list(manager.state_files)
    return [Path(name) for name in manager.backed_up_files()]


# --- commands -----------------------------------------------------------------------


def cmd_list(manager: BackupManager, args: argparse.Namespace, config: dict) -> int:
    now = datetime.now(UTC)
    remote, pending = _cloud_view(manager)
    doc, lines = [], []
    for path in state_files(manager, args.state_file):
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
        doc.append({"state_file": str(path), "backups": entries})
        lines.append(f"{path}: {len(rows)} backup(s) in {manager.backup_dir}")
        if rows:
            lines += ["  " + ln for ln in table(rows, ["NAME", "TIME (UTC)", "AGE", "SIZE",
                                                       "STATUS", "CLOUD"])]
    emit(args, doc, lines or [f"no backups in {manager.backup_dir}"])
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
    made, lines, failed = [], [], False
    for name in args.state_files:
        try:
            path = manager.backup_state_file(name)
        except BackupError as exc:
            lines.append(f"{name}: FAILED: {exc}")
            made.append({"state_file": name, "backup": None, "error": str(exc)})
            failed = True
            continue
        if path is None:
            lines.append(f"{name}: FAILED: the file does not exist")
            made.append({"state_file": name, "backup": None, "error": "does not exist"})
            failed = True
        else:
            lines.append(f"{name}: {path.name}")
            made.append({"state_file": name, "backup": path.name, "error": None})
    emit(args, made, lines)
    return EXIT_FAILED if failed else EXIT_OK


def cmd_restore(manager: BackupManager, args: argparse.Namespace, config: dict) -> int:
    path = Path(args.state_file)
    try:
        planned = manager.plan_restore(path, timestamp=args.timestamp, source=args.source)
    except NoValidBackupError as exc:
        emit(args, {"state_file": str(path), "restored": False, "error": str(exc)},
             [f"error: {exc}"])
        return EXIT_FAILED
    plan = manager.install_restore(planned, dry_run=True)
    replaces = {None: "nothing (the file is missing)",
                "valid": "a valid file, kept under backups/replaced/ unless a backup holds it",
                "invalid": "an invalid file, which will be kept under backups/corrupt/"}
    facts = {"state_file": str(path), "backup": plan.name, "source": plan.location,
             "time": plan.timestamp.isoformat(), "replaces": plan.replaced,
             "changed": plan.changed, "dry_run": args.dry_run, "restored": False}
    lines = [f"backup:   {plan.name} ({plan.location}, {plan.timestamp:%Y-%m-%d %H:%M:%S} UTC)",
             f"replaces: {replaces[plan.replaced]}" if plan.changed else
             "replaces: nothing: the file already holds this backup"]
    if not plan.changed or args.dry_run:
        emit(args, facts, lines + ([] if plan.changed else ["nothing to do"]))
        return EXIT_OK
    if plan.replaced == "valid" and not args.yes and not _confirm(path, lines, args):
        return EXIT_USAGE
    # Exactly the backup shown and confirmed, with the bytes already verified.
    result = manager.install_restore(planned)
    facts.update(restored=True, backup=result.name, kept_as=result.kept_as)
    lines.append(f"restored {path} from {result.name}")
    if result.kept_as:
        kept = manager.backup_dir / result.kept_as
        lines.append(f"the replaced file is kept as {kept}; to put it back: "
                     f"cp {kept} {path}  (restore never picks it by itself)")
    emit(args, facts, lines)
    return EXIT_OK


def _confirm(path: Path, lines: list[str], args: argparse.Namespace) -> bool:
    if not sys.stdin.isatty():
        print(f"error: {path} holds a valid state; refusing to replace it without "
              "confirmation: add --yes", file=sys.stderr)
        return False
    for line in lines:
        print(line)
    answer = input(f"Replace {path}? [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        print("not restored", file=sys.stderr)
        return False
    return True


def cmd_verify(manager: BackupManager, args: argparse.Namespace, config: dict) -> int:
    report = manager.verify(cloud=args.cloud)
    doc = {"ok": report.ok, "checked": len(report.items),
           "problems": [i._asdict() for i in report.problems]}
    lines = [f"checked {len(report.items)} file(s): "
             + ("all ok" if report.ok else f"{len(report.problems)} problem(s)")]
    lines += [f"  {i.status}: {i.location}/{i.name}" + (f" ({i.detail})" if i.detail else "")
              for i in report.problems]
    emit(args, doc, lines)
    return EXIT_OK if report.ok else EXIT_FAILED


def cmd_prune(manager: BackupManager, args: argparse.Namespace, config: dict) -> int:
    plan = manager.prune(dry_run=args.dry_run)
    doc = {"dry_run": args.dry_run, "decisions": [
        {"name": d.name, "keep": d.keep, "reason": d.reason} for d in plan]}
    rows = [["keep" if d.keep else ("would remove" if args.dry_run else "removed"), d.name,
             d.reason] for d in plan]
    removed = sum(not d.keep for d in plan)
    lines = (table(rows, ["ACTION", "NAME", "REASON"]) if rows else []) + [
        f"{removed} file(s) {'would be ' if args.dry_run else ''}removed, "
        f"{len(plan) - removed} kept"]
    emit(args, doc, lines)
    return EXIT_OK


def cmd_status(manager: BackupManager, args: argparse.Namespace, config: dict) -> int:
    if args.max_age_hours is not None and not args.max_age_hours > 0:
        raise UsageError(f"--max-age-hours must be a number > 0, got {args.max_age_hours}")
    host = _host_facts(config)
    if not manager.state_files and host.get("state_files"):
        # The host knows its live files even where the config leaves them out.
        manager.state_files = [Path(p) for p in host["state_files"]]
    doc = manager.status()
    doc["last_backup_error"] = host.get("last_backup_error")
    problems = status_problems(doc, args.max_age_hours)
    doc["ok"], doc["problems"] = not problems, problems
    if args.format == "prometheus":
        if args.json:
            raise UsageError("--json and --format prometheus: choose one")
        import time

        from .metrics import backup_bytes, exposition

        sys.stdout.write(exposition(doc, problems, backup_bytes(manager, doc), time.time()))
        return EXIT_OK
    if args.format == "json":
        args.json = True
    rows = [[s["state_file"], s["newest_valid"] or "NONE", age(s["newest_valid_age_seconds"]),
             f"{s['complete']}/{s['backups']}"] for s in doc["state_files"]]
    lines = table(rows, ["STATE FILE", "NEWEST VALID BACKUP", "AGE", "COMPLETE/ALL"])
    lines.append(f"disk use: {doc['disk_bytes']} bytes in {doc['backup_dir']}")
    for t in doc["targets"]:
        lines.append(f"copies to {t['target']}: {t['pending']} pending"
                     + (f" (oldest {age(t['oldest_pending_age_seconds'])})" if t["pending"]
                        else "") + (f", {t['conflicts']} conflict(s)" if t["conflicts"] else "")
                     + f", last success {t['last_success'] or 'never'}"
                     + (f", last error: {t['last_error']}" if t["last_error"] else ""))
    if doc["last_backup_error"]:
        lines.append(f"last backup error recorded by DalioLite: {doc['last_backup_error']}")
    lines.append("status: OK" if not problems else "status: PROBLEM: " + "; ".join(problems))
    emit(args, doc, lines)
    return EXIT_OK if not problems else EXIT_FAILED


def _host_facts(config: dict) -> dict[str, Any]:
    if not config.get("hook"):
        return {}
    import importlib

    module_name, function = config["hook"].split(":")
    folder = str(config["path"].parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # the host's module sits beside its config.yaml
    try:
        facts = getattr(importlib.import_module(module_name), function)(config["path"])
    except Exception as exc:  # the host's code: report it, never hide the backups' status
        log.error("backup.status_hook %s failed: %s", config["hook"], exc)
        return {"last_backup_error": f"status_hook {config['hook']} failed: {exc}"}
    return dict(facts or {})


def cmd_sync(manager: BackupManager, args: argparse.Namespace, config: dict) -> int:
    def progress(done: int, total: int) -> None:
        if total > 3 and not args.json:
            print(f"\rsent {done}/{total}", end="" if done < total else "\n", file=sys.stderr)

    result = manager.sync(progress=progress)
    doc = {"copied": result.copied, "pending": result.pending, "errors": result.errors}
    lines = [f"copied {result.copied}, pending {result.pending}"]
    lines += [f"  error: {e}" for e in result.errors]
    emit(args, doc, lines)
    return EXIT_OK if result.pending == 0 and not result.errors else EXIT_FAILED


def cmd_drill(manager: BackupManager, args: argparse.Namespace, config: dict) -> int:
    from .drill import drill

    targets = state_files(manager)
    doc = drill(manager, targets, cloud=args.cloud)
    rows = [[_shown(Path(d["state_file"])), d["backup"] or "-", d["source"] or "-",
             f"{d['seconds'] * 1000:.0f} ms", "ok" if d["ok"] else "FAILED"] for d in doc]
    failed = [d for d in doc if not d["ok"]]
    lines = table(rows, ["STATE FILE", "BACKUP", "SOURCE", "TIME TO RECOVER", "RESULT"]) + [
        f"  {d['state_file']}: {d['error']}" for d in failed] + [
        "drill: every state file can be recovered" if not failed
        else f"drill: {len(failed)} state file(s) cannot be recovered"]
    emit(args, {"ok": not failed, "state_files": doc}, lines if targets else
         ["drill: no state files configured and no backups found"])
    return EXIT_OK if targets and not failed else EXIT_FAILED


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


COMMANDS = {"list": cmd_list, "backup": cmd_backup, "restore": cmd_restore, "verify": cmd_verify,
            "prune": cmd_prune, "status": cmd_status, "sync": cmd_sync, "drill": cmd_drill}


if __name__ == "__main__":
    sys.exit(main())
