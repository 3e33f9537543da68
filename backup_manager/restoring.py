"""What BackupManager does to restore: plan (find and verify) what a restore of one file
or of a whole restore point would install, then install it; the stores a restore may use."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from . import log
from .atomic import read_state_file
from .copies import CLOUD_TARGET
from .errors import ConfigError, NoValidBackupError, UnseenStoresError
from .formats import check_timestamp_prefix, sha256_hex, state_key

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:

    from .history import History
    from .points import Point
    from .restore import Candidate, RestoreResult, Search
    from .store import Store



class RestorePlan:
    """What a restore would install into `path`, with the bytes already verified:
    `install_restore(plan)` installs exactly this backup. `point` is the restore
    point it comes from (None: no point names these bytes), `newest` the newest
    point; `current` is True when the live file already holds the newest point's
    bytes (nothing to install, even if that point's backup is damaged)."""

    def __init__(self, path: Path, chosen: Candidate | None, search: Search, *,
                 point: Point | None = None, newest: Point | None = None,
                 history: History | None = None):
        self.path, self.chosen, self.search = path, chosen, search
        self.point, self.newest, self.history = point, newest, history
        self.current = False


class PointPlan:
    """The restore point `restore_all` would install: `point`, and for each state file
    it names the verified bytes (`chosen`, by file name)."""

    def __init__(self, found: tuple[Point, dict[str, Candidate]] | None, history: History,
                 search: Search, state_files: list[Path]):
        self.point, self.chosen = found if found is not None else (None, {})
        self.history, self.search, self.newest = history, search, history.newest()
        configured = {p.name for p in state_files}
        self.not_configured = sorted(n for n, e in (self.point.files.items() if self.point
                                                    else ()) if e and n not in configured)


class Restoring:
    """BackupManager's restores, on the parts BackupManager.__init__ sets up
    (backup_dir, folder, store, outbox, mirrors, cloud, copier, policy, state_files)."""

    def restore_from_backup(self, state_file_path: str | Path,
                            backup_timestamp: str | None = None) -> bool:
        """The specification's call: True when the state file now holds a valid backup.

        Installs the file's entry of the newest restore point whose bytes verify
        (or, with `backup_timestamp`, the newest valid backup whose timestamp starts
        with it); False (logged) when none is valid or a store cannot be seen.
        A `backup_timestamp` that is not a timestamp prefix raises ValueError.
        """
        try:
            self.restore(state_file_path, timestamp=backup_timestamp)
        except NoValidBackupError as exc:
            log.error("%s", exc)
            return False
        return True

    def restore(self, state_file_path: str | Path, *, timestamp: str | None = None,
                dry_run: bool = False, source: str = "auto",
                from_reachable: bool = False) -> RestoreResult:
        """Restore one state file: its entry of the newest restore point whose bytes
        verify, or the newest valid backup whose timestamp starts with `timestamp`
        (any backup, named by a point or not).

        `source` is "auto" (backups/, mirrors and S3), "local" (backups/ and
        mirrors) or "cloud". The bytes are verified before anything becomes visible
        and installed atomically. What the file held is kept: a valid file no backup
        holds under backups/replaced/, an invalid one under backups/corrupt/; no
        backup or point is made, so history stays as it was. Raises
        NoValidBackupError listing what was tried, UnseenStoresError when a store
        that may hold newer state cannot be seen (unless `from_reachable`).
        """
        plan = self.plan_restore(state_file_path, timestamp=timestamp, source=source,
                                 from_reachable=from_reachable)
        result = self.install_restore(plan, dry_run=dry_run)
        if result.changed and not dry_run and result.behind:
            log.warning("%s now holds %s, which is %d restore point(s) older than the newest "
                        "(%d): a rollback. A host using the start-up guard refuses to trade "
                        "until it is acknowledged (DalioLite: --accept-rollback); restoring "
                        "again without --timestamp undoes it", plan.path, result.name,
                        result.behind, result.newest_point)
        return result

    def history(self, source: str = "auto") -> History:
        """The restore points every store (of `source`) holds; records what it could
        not see, and the highest number seen."""
        from .history import History
        history = History(self.sources(source), skip=self.copier.unreachable)
        for location, why in history.unseen.items():
            self.copier.note_unreachable(location, why)
        self.seen_sequence = max(self.seen_sequence, history.highest)
        return history

    def plan_restore(self, state_file_path: str | Path, *, timestamp: str | None = None,
                     source: str = "auto", from_reachable: bool = False) -> RestorePlan:
        """Find (and verify) what `restore` would install; change nothing."""
        from .restore import Search, find_in_points, find_newest_valid, point_naming
        prefix = check_timestamp_prefix(timestamp)
        if source not in ("auto", "local", "cloud"):
            raise ValueError(f"source must be auto, local or cloud, got {source!r}")
        path = Path(state_file_path)
        key = state_key(path)
        sources = list(self.sources(source))
        history = self.history(source)
        search = Search()
        for location, store in sources:
            if location in history.unseen:
                why = history.unseen[location]
                search.cannot_ask(location, store, why if why.startswith("not asked again")
                                  else f"cannot list: {why}")
        newest = history.newest()
        plan = RestorePlan(path, None, search, newest=newest, history=history)
        current = newest.entry(key.file_name) if newest else None
        if prefix is None and current is not None and _live_digest(path) == current.sha256:
            plan.current = True
            plan.point = newest
            return self._check_seen(plan, from_reachable)
        if prefix is None and newest is not None:
            found = find_in_points(history, sources, key, search)
            if found is not None:
                plan.chosen, plan.point = found
        else:
            plan.chosen = find_newest_valid(sources, key, prefix, search.unreachable_ids,
                                            search)
            if plan.chosen is not None:
                plan.point = point_naming(history, key, sha256_hex(plan.chosen.data))
        for location, why in search.unreachable_ids.items():
            self.copier.note_unreachable(location, why)
        self._check_seen(plan, from_reachable)
        if plan.chosen is None:
            wanted = f" with a timestamp starting {prefix!r}" if prefix else ""
            raise NoValidBackupError(
                f"no valid backup of {path}{wanted} ({search.summary()})", search.tried,
                found=search.found, unreachable=search.unreachable)
        return plan

    def _check_seen(self, plan: RestorePlan, from_reachable: bool) -> RestorePlan:
        unseen = plan.search.unreachable
        if unseen and not from_reachable:
            raise UnseenStoresError(
                f"nothing restored into {plan.path}: "
                + "; ".join(f"{where} could not be seen ({why})" for where, why in unseen.items())
                + ". It may hold newer state than the stores that answer. Fix it and try "
                "again, or install from the stores that answer on purpose "
                "(--from-reachable; from_reachable=True)", plan.search.tried,
                found=plan.search.found, unreachable=unseen)
        return plan

    def install_restore(self, plan: RestorePlan, *, dry_run: bool = False,
                        rehearsal: bool = False) -> RestoreResult:
        """Install exactly the backup `plan` chose, keeping what the file held. A
        `rehearsal` (drill) writes only that file: backups/ is left as it is."""
        from .install import install
        from .restore import standing
        if plan.current:
            return standing(plan, None)
        point_from = plan.history.read_from(plan.point.sequence) if plan.point else None
        result = install(self.folder, plan.path, plan.chosen, dry_run=dry_run,
                         skipped=plan.search.tried, rehearsal=rehearsal, point=plan.point,
                         point_from=point_from)
        return standing(plan, result)

    def entry_data(self, point: Point, file_name: str) -> bytes | None:
        """The verified bytes of a point's entry for `file_name`, from any store; None when
        the point records no such file or no store holds them intact."""
        from .restore import Search, fetch_entry
        entry = point.entry(file_name)
        if entry is None:
            return None
        found = fetch_entry(list(self.sources()), state_key(file_name), entry, Search())
        return None if found is None else found.data

    def plan_restore_all(self, *, point: int | None = None, timestamp: str | None = None,
                         source: str = "auto", from_reachable: bool = False) -> PointPlan:
        """The restore point `restore_all` would install (number `point`, or the newest
        made at a time starting with `timestamp`, or the newest whose backups all
        verify), with every configured state file's bytes verified; change nothing."""
        from .restore import Search, installable_point
        prefix = check_timestamp_prefix(timestamp)
        history = self.history(source)
        sources = list(self.sources(source))
        search = Search()
        for location, store in sources:
            if location in history.unseen:
                search.cannot_ask(location, store, f"cannot list: {history.unseen[location]}")
        names = [p.name for p in self.state_files]
        found = installable_point(history, sources, names, search, sequence=point,
                                  prefix=prefix)
        plan = PointPlan(found, history, search, self.state_files)
        self._check_seen(RestorePlan(Path("all state files"), None, search), from_reachable)
        if found is None:
            wanted = (f" numbered {point}" if point is not None else "") + (
                f" made at a time starting {prefix!r}" if prefix else "")
            raise NoValidBackupError(
                f"no restore point{wanted} whose backups all verify "
                f"({search.summary() if history.locations else 'no restore points yet'})",
                search.tried, found=search.found, unreachable=search.unreachable)
        return plan

    def restore_all(self, *, point: int | None = None, timestamp: str | None = None,
                    source: str = "auto", from_reachable: bool = False,
                    dry_run: bool = False) -> list[RestoreResult]:
        """Install one restore point into every configured state file it names (files
        it records as absent are left as they are); see plan_restore_all."""
        plan = self.plan_restore_all(point=point, timestamp=timestamp, source=source,
                                     from_reachable=from_reachable)
        return self.install_point(plan, dry_run=dry_run)

    def install_point(self, plan: PointPlan, *, dry_run: bool = False) -> list[RestoreResult]:
        results = []
        for path in self.state_files:
            chosen = plan.chosen.get(path.name)
            if chosen is None:
                continue
            one = RestorePlan(path, chosen, plan.search, point=plan.point, newest=plan.newest,
                              history=plan.history)
            results.append(self.install_restore(one, dry_run=dry_run))
        return results

    def sources(self, source: str = "auto") -> Iterator[tuple[str, Store]]:
        """(location, store) of every store a restore may use, in the order that wins
        on equal names: backups/ ("local"), the mirrors, then S3 ("s3")."""
        if source in ("auto", "local"):
            yield "local", self.store
            yield from self.mirrors.items()
        if source in ("auto", "cloud"):
            if self.cloud is None:
                if source == "cloud":
                    raise ConfigError("restore from the cloud needs backup.cloud_enabled "
                                      "and backup.s3_bucket")
                return
            yield CLOUD_TARGET, self.cloud

    def quarantine(self, state_file_path: str | Path) -> list[str]:
        """Move every local backup of one state file, and the live file if invalid,
        into backups/corrupt/: a deliberate fresh start, never a deletion."""
        from .install import quarantine
        return quarantine(self.folder, Path(state_file_path))


def _live_digest(path: Path) -> str | None:
    try:
        return sha256_hex(read_state_file(path)[0])
    except OSError:
        return None
