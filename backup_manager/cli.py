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

# argparse and json are imported where needed: `import backup_manager` loads neither.
TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    import argparse

    from .site import Site

GLOBAL_DEFAULTS = {"config": None, "backup_dir": None, "json": False, "verbose": False}

# Each command: its help line, and the module holding `NAME_arguments` and `cmd_NAME`
# side by side (imported only for the command that runs, or to print help).
COMMANDS = {
    "list": ("backups per state file", "commands"),
    "backup": ("back up state files now", "commands"),
    "restore": ("restore a state file (or --all) from the newest restore point that "
                "verifies", "restore_command"),
    "verify": ("check every backup; exit 1 on any problem", "commands"),
    "prune": ("apply the retention plan", "commands"),
    "status": ("backup health for cron and monitors", "status_command"),
    "sync": ("upload every pending copy now", "status_command"),
    "drill": ("rehearse recovery into a temporary folder", "commands"),
    "key": ("the key that signs copies: init, rotate, check, decrypt", "key_command"),
}


def command_part(command: str, part: str):  # noqa: ANN201 - a function of a command module
    """`arguments` or `cmd` of a command, from its module."""
    from importlib import import_module

    module = import_module(f"{__package__}.{COMMANDS[command][1]}")
    return getattr(module, f"{command}_arguments" if part == "arguments" else f"cmd_{command}")


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
    for command, (text, _) in COMMANDS.items():
        command_part(command, "arguments")(sub.add_parser(command, help=text))
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
        return command_part(args.command, "cmd")(open_site(args), args)
    except (UsageError, ConfigError, ValueError) as exc:
        return fail(args.json, str(exc), EXIT_USAGE)
    except (BackupError, OSError) as exc:
        return fail(args.json, str(exc), EXIT_FAILED)


def open_site(args: argparse.Namespace) -> Site:
    """The installation the command line names: --config, or ./config.yaml when there
    is one, or none (the working directory's backups/, or --backup-dir)."""
    from .site import Site

    config_path = args.config or ("config.yaml" if os.path.exists("config.yaml") else None)
    if config_path is not None and not os.path.isfile(config_path):
        raise UsageError(f"config file {config_path} does not exist")
    return Site(config_path, backup_dir=args.backup_dir, here=True,
                explicit=bool(args.config))


if __name__ == "__main__":
    sys.exit(main())
