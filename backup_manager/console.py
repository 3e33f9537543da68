"""What the command line says: output (stdout for what a script reads, stderr for
people, one JSON document with --json), exit codes, tables, and which state file a
STATE_FILE argument means. How paths and commands are named is the Site's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from .site import Site

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_OUTPUT_CLOSED = 141  # 128 + SIGPIPE: what the shell reports for `git log | head -1`
AS_GIVEN_HELP = ("take STATE_FILE as given (relative to the working directory), even if "
                 "the config names no such state file")


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


# --- which state files ---------------------------------------------------------------


def state_files(site: Site, given: str | None = None,
                args: argparse.Namespace | None = None) -> list[Path]:
    """The state files a command covers: the one given (see `resolve`), the configured
    ones, or every state file with backups in the folder."""
    if given:
        return [resolve(site, given, args)]
    if site.manager.state_files:
        return list(site.manager.state_files)
    return [Path(name) for name in site.manager.backed_up_files()]


def resolve(site: Site, given: str, args: argparse.Namespace | None) -> Path:
    """The state file STATE_FILE means. Without a config, or with --path-as-given, the
    path as given. With one: the configured state file it names (by its path from the
    config's folder or from here, or by its file name); a relative path resolves
    against the config's folder when the config names no state files; anything else
    is a UsageError listing the configured ones."""
    path = Path(given)
    if site.path is None or getattr(args, "path_as_given", False):
        return path
    configured = list(site.manager.state_files)
    if not configured:
        return path if path.is_absolute() else site.base / path
    tries = [path] if path.is_absolute() else [site.base / path, Path.cwd() / path]
    for candidate in tries:
        for state_file in configured:
            if os.path.abspath(candidate) == os.path.abspath(state_file) or \
                    candidate.resolve() == state_file.resolve():
                return state_file
    if not path.is_absolute() and path.name == given:
        for state_file in configured:
            if state_file.name == given:
                return state_file
    names = ", ".join(site.shown(p) for p in configured)
    raise UsageError(
        f"{given} is not one of the state files {site.path} names ({names}, relative "
        f"to {site.base}): name one of them by its path or file name, or add "
        f"--path-as-given to use {os.path.abspath(given)} as given")
