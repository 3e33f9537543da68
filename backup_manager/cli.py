"""The operator's command line: python -m backup_manager [--config PATH] [--json] COMMAND.

Exit codes: 0 ok; 1 a check failed or nothing valid to restore; 2 usage or
configuration error; 141 the reader closed the output early (as `| head`
does), which ends the command quietly. Expected errors print one line naming
the problem and the fix, never a traceback; with --json every outcome, errors
included, is also one JSON document on stdout.

With a config, a STATE_FILE means one of the configured state files: its path
relative to the config's folder or the working directory, or its file name;
any other path is refused unless --path-as-given. Paths are printed relative to
the config's folder when inside it; commands to copy are printed so that they
run from the working directory.
"""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

from . import log
from .atomic import file_lock, read_state_file
from .copies import CLOUD_TARGET
from .errors import BackupError, ConfigError, LockTimeout, NoValidBackupError
from .formats import fetch_verified
from .health import age, split_fix, status_problems, unconfigured_copies
from .manager import BackupManager

# argparse and json are imported where needed: `import backup_manager` loads neither.
TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator
    from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_OUTPUT_CLOSED = 141  # 128 + SIGPIPE: what the shell reports for `git log | head -1`
GLOBAL_DEFAULTS = {"config": None, "backup_dir": None, "json": False, "verbose": False}
SYNC_PROGRESS_EVERY = 10  # without a terminal: one progress line per this many copies


class UsageError(Exception):
    """A command line that cannot be carried out as given; `usage` is the synopsis to
    show a person with it (argparse's)."""

    def __init__(self, message: str, usage: str = ""):
        super().__init__(message)
        self.usage = usage


class OutputClosed(Exception):
    """The reader of stdout went away (`| head -1`): nothing more to say to anyone."""


AS_GIVEN_HELP = ("take STATE_FILE as given (relative to the working directory), even if "
                 "the config names no such state file")


def _arguments_of(command: str, c: argparse.ArgumentParser) -> None:
    if command in ("list", "backup", "restore", "verify"):
        c.add_argument("--path-as-given", action="store_true", help=AS_GIVEN_HELP)
    if command in ("list", "verify"):
        c.add_argument("state_file", nargs="?", metavar="STATE_FILE")
    if command == "backup":
        c.add_argument("state_files", nargs="+", metavar="STATE_FILE")
    elif command == "restore":
        c.add_argument("state_file", metavar="STATE_FILE")
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
    elif command == "sync":
        c.add_argument("--forget", metavar="TARGET",
                       help="drop, on purpose, the copies owed to TARGET (as status shows "
                            "it): all of them for a target no longer configured, the "
                            "conflicting ones for a configured target; sends nothing")


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

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> None:  # type: ignore[override]
            raise UsageError(message, self.format_usage().rstrip())

    p = Parser(
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
    return SimpleNamespace(command="backup", state_files=argv[1:], path_as_given=False,
                           **GLOBAL_DEFAULTS)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        try:
            code = _run(argv)
            sys.stdout.flush()
        except BrokenPipeError:
            raise OutputClosed from None
        return code
    except OutputClosed:
        # Exit quietly, as git and ls do; stdout now goes nowhere, so the interpreter's
        # own flush at exit cannot complain either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_OUTPUT_CLOSED


def _run(argv: list[str]) -> int:
    options = argv[:argv.index("--")] if "--" in argv else argv
    as_json = "--json" in options  # known even when the line cannot be parsed
    try:
        args = plain_backup(argv) or build_parser().parse_args(argv)
    except UsageError as exc:
        say(exc.usage)
        return fail(as_json, str(exc), EXIT_USAGE)
    if args.verbose:
        import logging

        logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s",
                            stream=sys.stderr)
    try:
        manager, config = open_manager(args)
        return COMMANDS[args.command](manager, args, config)
    except (UsageError, ConfigError, ValueError) as exc:
        return fail(args.json, str(exc), EXIT_USAGE)
    except (BackupError, OSError) as exc:
        return fail(args.json, str(exc), EXIT_FAILED)


def open_manager(args: argparse.Namespace) -> tuple[BackupManager, dict[str, Any]]:
    """The manager the command line describes, and what the command needs besides:
    `path` (config.yaml, resolved), `base` (its folder, or the working directory
    without one), `explicit` (--config given), `hook`, `host_lock` and
    `host_lock_timeout`."""
    config_path = args.config or ("config.yaml" if os.path.exists("config.yaml") else None)
    overrides = {"backup_dir": Path(args.backup_dir)} if args.backup_dir else {}
    context: dict[str, Any] = {"path": None, "base": Path.cwd(), "explicit": False,
                               "hook": None, "host_lock": None, "host_lock_timeout": None,
                               "backup_dir_given": args.backup_dir}
    if config_path is None:
        return BackupManager(**overrides), context
    if not os.path.isfile(config_path):
        raise UsageError(f"config file {config_path} does not exist")
    from .config import host_lock, load_config_file, status_hook

    config = load_config_file(config_path)
    base = Path(config_path).resolve().parent
    manager = BackupManager.from_config({k: v for k, v in config.items() if k == "backup"},
                                        base_dir=base, **overrides)
    lock, wait = host_lock(config.get("backup"), base)
    context.update(path=Path(config_path).resolve(), base=base, explicit=bool(args.config),
                   hook=status_hook(config.get("backup")), host_lock=lock,
                   host_lock_timeout=wait)
    return manager, context


# --- output -------------------------------------------------------------------------


def emit(args: argparse.Namespace, doc: Any, lines: list[str]) -> None:
    if args.json:
        import json

        out(json.dumps(doc, indent=2, default=str))
    else:
        for line in lines:
            out(line)


def out(text: str, end: str = "\n") -> None:
    """Write to stdout; OutputClosed when its reader has gone away."""
    try:
        sys.stdout.write(text + end)
    except BrokenPipeError:
        raise OutputClosed from None


def say(text: str, end: str = "\n") -> None:
    """Tell the person (stderr); a closed stderr is no reason to stop."""
    try:
        sys.stderr.write(text + end)
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):
        pass


def fail(as_json: bool | argparse.Namespace, message: str, code: int, **facts: Any) -> int:
    """Report an error: the human line on stderr and, with --json, one JSON document
    on stdout ({"error": ..., "exit_code": ...} and any `facts`); return `code`."""
    if not isinstance(as_json, bool):
        as_json = as_json.json
    say(f"error: {message}")
    if as_json:
        import json

        out(json.dumps({**facts, "error": message, "exit_code": code}, indent=2, default=str))
    return code


def table(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*header).rstrip()] + [fmt.format(*map(str, r)).rstrip() for r in rows]


def shown(path: str | Path, config: dict) -> str:
    """A path for people: relative to the config's folder (or, without a config, the
    working directory) when inside it, else absolute."""
    text = str(path)
    if "://" in text or os.sep not in text:
        return text  # an S3 label, or a bare file name (a state file known by its backups)
    full = Path(os.path.abspath(text))
    try:
        return str(full.relative_to(config["base"])) or "."
    except ValueError:
        return str(full)


def arg(path: str | Path) -> str:
    """A path for a command to copy: relative to the working directory when inside it
    (the command runs from here), else absolute; quoted for the shell."""
    import shlex

    full = Path(os.path.abspath(path))
    try:
        text = str(full.relative_to(Path.cwd()))
    except ValueError:
        text = str(full)
    return shlex.quote(text)


def state_arg(path: str | Path, config: dict) -> str:
    """A state file for a command of ours that `command_prefix` starts: as shown (relative
    to the config's folder, which is what our commands resolve it against)."""
    import shlex

    return shlex.quote(shown(path, config))


def python() -> str:
    """How to run this interpreter from here: `python` when that is the one the PATH
    finds (the virtual environment is active), else its path."""
    import shutil

    found = shutil.which("python")
    here = os.path.dirname(os.path.abspath(sys.executable))
    if found and os.path.dirname(os.path.abspath(found)) == here:
        return "python"
    return arg(sys.executable)


def command_prefix(args: argparse.Namespace | None, config: dict) -> str:
    """The command line that reaches the same backups from the working directory."""
    command = f"{python()} -m backup_manager"
    if config.get("path") and (config.get("explicit") or config["base"] != Path.cwd()):
        command += f" --config {arg(config['path'])}"
    if config.get("backup_dir_given"):
        command += f" --backup-dir {arg(config['backup_dir_given'])}"
    return command


# --- which state files ---------------------------------------------------------------


def state_files(manager: BackupManager, given: str | None = None,
                args: argparse.Namespace | None = None, config: dict | None = None
                ) -> list[Path]:
    """The state files a command covers: the one given (see `resolve`), the configured
    ones, or every state file with backups in the folder."""
    if given:
        return [resolve(manager, given, args, config or {})]
    if manager.state_files:
        return list(manager.state_files)
    return [Path(name) for name in manager.backed_up_files()]


def resolve(manager: BackupManager, given: str, args: argparse.Namespace | None,
            config: dict) -> Path:
    """The state file STATE_FILE means. Without a config, or with --path-as-given, the
    path as given. With one: the configured state file it names (by its path from the
    config's folder or from here, or by its file name); a relative path resolves
    against the config's folder when the config names no state files; anything else
    is a UsageError listing the configured ones."""
    path = Path(given)
    if config.get("path") is None or getattr(args, "path_as_given", False):
        return path
    configured = list(manager.state_files)
    if not configured:
        return path if path.is_absolute() else config["base"] / path
    tries = [path] if path.is_absolute() else [config["base"] / path, Path.cwd() / path]
    for candidate in tries:
        for state_file in configured:
            if os.path.abspath(candidate) == os.path.abspath(state_file) or \
                    candidate.resolve() == state_file.resolve():
                return state_file
    if not path.is_absolute() and path.name == given:
        for state_file in configured:
            if state_file.name == given:
                return state_file
    names = ", ".join(shown(p, config) for p in configured)
    raise UsageError(
        f"{given} is not one of the state files {config['path']} names ({names}, relative "
        f"to {config['base']}): name one of them by its path or file name, or add "
        f"--path-as-given to use {os.path.abspath(given)} as given")


# --- commands -----------------------------------------------------------------------


def cmd_list(manager: BackupManager, args: argparse.Namespace, config: dict) -> int:
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


if __name__ == "__main__":
    sys.exit(main())
