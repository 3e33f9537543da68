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
from pathlib import Path
from types import SimpleNamespace

from .console import (
    EXIT_FAILED,
    EXIT_OUTPUT_CLOSED,
    EXIT_USAGE,
    OutputClosed,
    UsageError,
    fail,
    say,
)
from .errors import BackupError, ConfigError
from .manager import BackupManager

# argparse and json are imported where needed: `import backup_manager` loads neither.
TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    import argparse
    from typing import Any

GLOBAL_DEFAULTS = {"config": None, "backup_dir": None, "json": False, "verbose": False}


AS_GIVEN_HELP = ("take STATE_FILE as given (relative to the working directory), even if "
                 "the config names no such state file")


def _arguments_of(command: str, c: argparse.ArgumentParser) -> None:
    if command in ("list", "backup", "restore", "verify"):
        c.add_argument("--path-as-given", action="store_true", help=AS_GIVEN_HELP)
    if command in ("list", "verify"):
        c.add_argument("state_file", nargs="?", metavar="STATE_FILE")
    if command == "list":
        c.add_argument("--points", action="store_true",
                       help="the restore points (the history) instead of backups")
    if command == "backup":
        c.add_argument("state_files", nargs="+", metavar="STATE_FILE")
    elif command == "restore":
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
    "restore": "restore a state file (or --all) from the newest restore point that verifies",
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
        from .commands import COMMANDS

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


if __name__ == "__main__":
    sys.exit(main())
