"""What the command line says and how it names things: output (stdout for what a
script reads, stderr for people, one JSON document with --json), exit codes,
paths shown relative to the config's folder, commands to copy, and which state
file a STATE_FILE argument means.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .manager import BackupManager

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    import argparse
    from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_OUTPUT_CLOSED = 141  # 128 + SIGPIPE: what the shell reports for `git log | head -1`


class UsageError(Exception):
    """A command line that cannot be carried out as given; `usage` is the synopsis to
    show a person with it (argparse's)."""

    def __init__(self, message: str, usage: str = ""):
        super().__init__(message)
        self.usage = usage


class OutputClosed(Exception):
    """The reader of stdout went away (`| head -1`): nothing more to say to anyone."""


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
