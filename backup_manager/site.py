"""Site: one installation, as its config.yaml describes it.

The command line, the Backups page and DalioLite itself each build one Site and take
from it everything about where things are: the BackupManager, the state folder, the
host's run lock, the host's record (what DalioLite last wrote about its backups), the
installation's status, and every command a person is told to run.
"""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack, contextmanager
from pathlib import Path

from .atomic import file_lock, read_state_file
from .config import backup_options, host_lock, load_config_file, state_dir_of
from .errors import LockTimeout
from .manager import BackupManager

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from typing import Any

RUN_LOCK = "dalio_lite.lock"
"""DalioLite's run lock, in its state folder, unless `backup.host_lock` names another."""
HOST_RECORD = "autopilot_status.json"
"""The host's record, in its state folder: its last backup error (kept out of backups/,
so it survives a backups folder that cannot be written), its state files and the
command that runs it."""


class Site:
    """One installation. `config_path` None: no config (the working directory's
    backups/, or `backup_dir`). `here`: commands are printed to be run from the working
    directory (the command line); otherwise with absolute paths (logs, the page).
    `state_files`: the host's own list, when it computes one; `host_program`: the host
    itself (DalioLite passes its own file), so its commands need no record. `doc`:
    config.yaml as the caller read it already (it is read once). `python`: the word
    for the interpreter in printed commands (default: its path, or `python` when that
    is what the PATH finds and commands are run from here)."""

    def __init__(self, config_path: str | Path | None = None, *,
                 backup_dir: str | Path | None = None, here: bool = False,
                 explicit: bool = True, state_files: list[Path] | None = None,
                 host_program: Path | None = None, max_age_hours: float | None = None,
                 doc: Mapping[str, Any] | None = None, python: str | None = None):
        self.path = Path(config_path).resolve() if config_path is not None else None
        self.base = self.path.parent if self.path is not None else Path.cwd()
        self.here, self.explicit, self.backup_dir_given = here, explicit, backup_dir
        self.host_program, self.max_age_hours = host_program, max_age_hours
        self.python = python
        if doc is None:
            doc = load_config_file(self.path) if self.path else {}
        self.config = dict(doc)  # config.yaml as read, once
        section = self.config.get("backup")
        self.state_dir = state_dir_of(self.config, self.base) if self.path else None
        lock, self.run_lock_timeout = host_lock(section, self.base)
        self.run_lock = lock or (self.state_dir / RUN_LOCK if self.state_dir else None)
        # Without a config, backups/ is the working directory's, named as given.
        options = backup_options(section, self.base) if self.path else {"state_files": []}
        if backup_dir:
            options["backup_dir"] = Path(backup_dir)
        if state_files is not None:
            options["state_files"] = state_files
        elif not options["state_files"]:
            # The host knows its live files even where the config leaves them out.
            options["state_files"] = [Path(p) for p in self.host_record().get(
                "state_files") or ()]
        self.manager = BackupManager(**options)

    # --- what the host recorded -----------------------------------------------------------

    @property
    def host_record_path(self) -> Path | None:
        return self.state_dir / HOST_RECORD if self.state_dir else None

    def host_record(self) -> dict[str, Any]:
        """The host's record; {} when there is none or it cannot be read."""
        import json

        if self.host_record_path is None:
            return {}
        try:
            doc = json.loads(read_state_file(self.host_record_path)[0])
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def live_path(self, row: Mapping[str, Any]) -> Path:
        """The live file of a status row (a state file known only by its backups lives
        in the state folder)."""
        if row["path"]:
            return Path(row["path"])
        return (self.state_dir or self.base) / row["state_file"]

    # --- the host's run lock ------------------------------------------------------------

    @contextmanager
    def host_locked(self, waiting: Callable[[str], None] | None = None,
                    timeout: float | None = None) -> Iterator[None]:
        """Hold the host's run lock, so a restore never lands in the middle of a daily
        check. `waiting(text)` is told when it has to wait. No lock is taken where no
        host ever ran (its state folder does not exist)."""
        lock = self.run_lock
        if lock is None or not lock.parent.is_dir():
            yield
            return
        wait = self.run_lock_timeout if timeout is None else timeout
        what = "DalioLite's run lock (backup.host_lock)"
        with ExitStack() as held:
            try:
                held.enter_context(file_lock(lock, 0.001, what))
            except LockTimeout:
                if waiting is not None:
                    waiting(f"waiting up to {wait:g} s for {what} {self.shown(lock)}: a "
                            "DalioLite run is in progress, and a restore waits for it to "
                            "finish")
                held.enter_context(file_lock(lock, wait, what))
            yield

    # --- status ---------------------------------------------------------------------------

    def status(self, max_age_hours: float | None = None,
               view: Callable[[dict], dict] | None = None) -> dict[str, Any]:
        """The installation's status: the manager's facts, the host's last backup error,
        and `problems` (subject, kind, problem, fix), `ok` when there are none; judged
        against `max_age_hours` (or the site's). `view` turns the facts into what a
        person reads before the problems are worded."""
        from .problems import status_problems

        if max_age_hours is None:
            max_age_hours = self.max_age_hours
        doc = self.manager.status()
        doc["last_backup_error"] = self.host_record().get("last_backup_error")
        problems = status_problems(view(doc) if view else doc, max_age_hours,
                                   self.command(""), self.host_command())
        doc["problems"] = [{"subject": p.subject, "kind": str(p.kind), "problem": p.what,
                            "fix": p.fix} for p in problems]
        doc["ok"] = not problems
        return doc

    # --- what a person is told to run -------------------------------------------------------

    def command(self, rest: str) -> str:
        """`python -m backup_manager` for these backups, then `rest`: from the working
        directory when `here`, else with absolute paths."""
        line = f"{self._python()} -m backup_manager"
        if self.path is not None and (self.explicit or self.base != Path.cwd()):
            line += f" --config {self.arg(self.path)}"
        if self.backup_dir_given:
            line += f" --backup-dir {self.arg(self.backup_dir_given)}"
        return f"{line} {rest}".rstrip()

    def host_command(self, rest: str = "") -> str:
        """How to run the host's daily check (then `rest`), or words for it when the
        host never said."""
        if self.host_program is not None:
            line = f"{self._python()} {self.arg(self.host_program)}"
            if self.path is not None:
                line += f" --config {self.arg(self.path)}"
        else:
            line = self.host_record().get("run_command")
            if not line:
                return "the host's daily check" + (f" with {rest}" if rest else "")
        return f"{line} {rest}".rstrip()

    def arg(self, path: str | Path) -> str:
        """A path for a command to copy, quoted for the shell: relative to the working
        directory when `here` and inside it, else absolute."""
        import shlex

        full = Path(os.path.abspath(path))
        if self.here:
            try:
                return shlex.quote(str(full.relative_to(Path.cwd())))
            except ValueError:
                pass
        return shlex.quote(str(full))

    def state_arg(self, path: str | Path) -> str:
        """A state file for a command of ours: as shown (relative to the config's
        folder, which is what our commands resolve it against), quoted for the shell."""
        import shlex

        return shlex.quote(self.shown(path))

    def shown(self, path: str | Path) -> str:
        """A path for people: relative to the config's folder (or, without a config,
        the working directory) when inside it, else absolute."""
        text = str(path)
        if "://" in text or os.sep not in text:
            return text  # an S3 label, or a bare file name (a state file known by its backups)
        full = Path(os.path.abspath(text))
        try:
            return str(full.relative_to(self.base)) or "."
        except ValueError:
            return str(full)

    def _python(self) -> str:
        """This interpreter: `python` when that is the one the PATH finds and commands
        are run from here (the virtual environment is active), else its path."""
        if self.python:
            return self.python
        if self.here:
            import shutil

            found = shutil.which("python")
            if found and os.path.dirname(os.path.abspath(found)) == \
                    os.path.dirname(os.path.abspath(sys.executable)):
                return "python"
        return self.arg(sys.executable)


def facts_view(site: Site) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """Status facts with paths as a person reads them (the JSON document keeps them
    absolute): state files relative to the config's folder (what the fix commands
    take), the backups folder as a command names it."""
    def view(doc: Mapping[str, Any]) -> dict[str, Any]:
        return {**doc, "backup_dir": site.arg(doc["backup_dir"]),
                "state_files": [{**s, "path": s["path"] and site.shown(s["path"])}
                                for s in doc["state_files"]],
                "targets": [{**t, "target": site.shown(t["target"])} for t in doc["targets"]]}
    return view
