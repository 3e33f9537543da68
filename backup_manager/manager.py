"""BackupManager: the entry point. It holds what the configuration names (the
backups folder, mirrors, the S3 bucket, the policy) and hands each job to the
module that does it: restore, pruning, health, copies.

Local backups are taken under an inter-process lock on the backups folder;
copies to mirror folders and S3 are made outside it, through the outbox, so a
slow endpoint never blocks a local backup and a failed copy is retried later.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from . import log
from .atomic import read_state_file
from .catalog import (
    BackupInfo,
    BackupSet,
    backups_of,
    group_backups,
    next_stamp,
    state_files_in,
)
from .config import (
    MAX_STATE_BOUND,
    MIN_STATE_BOUND,
    backup_options,
    distinct_file_names,
    load_config_file,
    timeout,
    whole_number,
)
from .content import validate_content
from .copies import CLOUD_TARGET, Copier, SyncResult
from .errors import (
    BackupError,
    ConfigError,
    IntentNotCommitted,
    InvalidStateError,
    NoValidBackupError,
    StoreUnreachable,
    UnseenStoresError,
    UploadConflict,
    WriterConflict,
    storage_error,
)
from .folder import BackupsFolder
from .formats import SIDECAR_SUFFIX, check_timestamp_prefix, sha256_hex, state_key
from .local import LocalStore
from .points import PointKind, point_name, points_in
from .pruning import prune_backups
from .retention import Decision, RetentionPolicy
from .seal import Sealing, seal_stores
from .store import MAX_STATE_BYTES, fetch_verified

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    from typing import Any

    from .formats import BackupName, StateKey
    from .history import History
    from .outbox import PendingCopy
    from .points import Point
    from .restore import Candidate, RestoreResult, Search
    from .store import Store
    from .verify import VerifyReport


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


class BackupManager:
    """Backups of state files in `backup_dir`, optionally mirrored and sent to S3.

    The first four arguments are the original specification's; everything newer
    is keyword-only. Nothing touches the disk until the first backup or restore,
    so a broken backups folder never stops the host from starting.
    """

    def __init__(self, backup_dir: str | Path = "backups", retention_days: int = 30,
                 cloud_enabled: bool = False, s3_bucket: str | None = None, *,
                 keep_last: int = 10, keep_daily: int = 30, durable: bool = True,
                 lock_timeout: float = 10.0, state_files: Iterable[str | Path] = (),
                 mirror_dirs: Iterable[str | Path] = (), s3_prefix: str = "dalio-lite-backups",
                 s3_endpoint_url: str | None = None, s3_region: str | None = None,
                 s3_sse: str | None = None, s3_kms_key_id: str | None = None,
                 s3_expected_bucket_owner: str | None = None,
                 s3_client_config: Mapping[str, Any] | None = None,
                 max_state_bytes: int = MAX_STATE_BYTES,
                 clock: Callable[[], datetime] | None = None, require_fence: bool = False,
                 sealing: Sealing | None = None):
        try:
            self.policy = RetentionPolicy(keep_last, keep_daily, retention_days)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if not isinstance(cloud_enabled, bool):
            raise ConfigError(f"cloud_enabled must be true or false, got {cloud_enabled!r}")
        if cloud_enabled and not s3_bucket:
            raise ConfigError("cloud_enabled is true but s3_bucket is not set")
        self.backup_dir = Path(backup_dir)
        self.retention_days = retention_days
        self.cloud_enabled = cloud_enabled
        self.s3_bucket = s3_bucket
        self.durable = bool(durable)
        self.require_fence = bool(require_fence)
        """Refuse what needs a claim (orders) when a copy target cannot be asked."""
        self.max_state_bytes = whole_number("max_state_bytes", max_state_bytes,
                                            minimum=MIN_STATE_BOUND, maximum=MAX_STATE_BOUND)
        self.state_files = distinct_file_names("state_files", [Path(p) for p in state_files])
        self.folder = BackupsFolder(self.backup_dir, durable=self.durable,
                                    lock_timeout=timeout("lock_timeout", lock_timeout),
                                    clock=clock or (lambda: datetime.now(UTC)),
                                    max_bytes=self.max_state_bytes)
        self.store, self.outbox = self.folder.store, self.folder.outbox
        self.mirrors = {_mirror_id(Path(d)): LocalStore(d, durable=self.durable,
                                                        max_bytes=self.max_state_bytes)
                        for d in mirror_dirs}
        self.cloud = None
        if cloud_enabled:
            from .s3 import S3Store

            self.cloud = S3Store(s3_bucket, s3_prefix, endpoint_url=s3_endpoint_url,
                                 region=s3_region, sse=s3_sse, kms_key_id=s3_kms_key_id,
                                 expected_owner=s3_expected_bucket_owner,
                                 client_config=dict(s3_client_config or {}),
                                 max_bytes=self.max_state_bytes)
        self.mirrors, self.cloud = seal_stores(self.mirrors, self.cloud, sealing, lambda: self.writer, self.backup_dir, self.durable)  # noqa: E501 - issue 22: copies are signed
        targets: dict[str, Store] = dict(self.mirrors)
        if self.cloud is not None:
            targets[CLOUD_TARGET] = self.cloud
        self.copier = Copier(self.store, self.outbox, targets)
        self.seen_sequence = 0
        """The highest restore point number seen in any store by this manager."""
        self._batch: list[dict[str, tuple[str, str, datetime]]] = []
        self._writer: str | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | str | Path, *,
                    base_dir: str | Path | None = None, **overrides: Any) -> BackupManager:
        """Build from a whole configuration: a mapping with a `backup:` key, or a
        config.yaml path (whose folder then anchors relative paths)."""
        if isinstance(config, (str, Path)):
            base_dir = Path(config).resolve().parent
            config = load_config_file(config)
        if not isinstance(config, Mapping):
            raise ConfigError(f"config must be a mapping, got {type(config).__name__}")
        base = Path(base_dir) if base_dir is not None else Path.cwd()
        options = backup_options(config.get("backup"), base)
        options.update(overrides)
        return cls(**options)

    def __repr__(self) -> str:
        return f"BackupManager({str(self.backup_dir)!r})"


    @property
    def writer(self) -> str:
        """This machine's writer id (backups/.writer), made on first use."""
        if self._writer is None:
            from .writer import writer_id
            self._writer = writer_id(self.backup_dir, durable=self.durable)
        return self._writer

    def backup_state_file(self, state_file_path: str | Path) -> Path | None:
        """Back up one state file; return the new backup's path, or None if it is missing.

        When this returns, the backup and its sidecar are on disk (unless
        durable=False), and so is a restore point naming it, unless the call is
        inside `changes()`, whose end commits one point for all. Invalid content
        raises InvalidStateError and changes nothing. Copies to mirrors and S3 never
        raise: failures wait in the outbox.
        """
        path = Path(state_file_path)
        key = state_key(path)
        try:
            os.lstat(path)
        except FileNotFoundError:
            log.info("nothing to back up: %s does not exist", path)
            return None
        except OSError as exc:  # EIO, EACCES: a backup failure, never "nothing there"
            raise storage_error(exc, f"cannot read {path}") from None
        with self.folder.locked():
            # Read under the lock: a read that waited for it may be the newer one.
            try:
                data, mode = read_state_file(path)
            except FileNotFoundError:
                log.info("nothing to back up: %s does not exist", path)
                return None
            except OSError as exc:
                raise storage_error(exc, f"cannot read {path}") from None
            validate_content(path.name, data)
            if len(data) > self.max_state_bytes:
                raise InvalidStateError(
                    f"{path.name}: {len(data):,} bytes, larger than backup.max_state_bytes "
                    f"({self.max_state_bytes:,}): no backup of it could be read back")
            files = self.store.list_names()
            backups = group_backups(files, [key]).get(key) or BackupSet(key, [], set())
            try:
                # One folder sync after the point that names this backup makes both
                # names durable (the point is the only write that follows).
                now = self.folder.clock()
                name = self.store.create_backup(*key, data, mode, self._stamp(backups, now),
                                                before_commit=self.copier.record,
                                                sync_folder=bool(self._batch))
            except OSError as exc:
                raise storage_error(exc, f"cannot write a backup of {path} in "
                                         f"{self.backup_dir}") from None
            files += [name, name + SIDECAR_SUFFIX]
            made = {key.file_name: (name, sha256_hex(data), now)}
            if self._batch:
                self._batch[-1].update(made)
            else:
                point = self._commit_after(key, path, made, files)
                if point is not None:
                    files += [point.name, point.name + SIDECAR_SUFFIX]
            backups = backups.with_backup(name[len(key.stem) + 1: len(name) - len(key.suffix)])
            self._prune_quietly(key, known_good=name, files=files, backups=backups)
        log.info("backed up %s as %s", path, name)
        self.copier.send_owed()
        return self.backup_dir / name

    def commit_point(self, kind: str, reason: str = "", *,
                     details: Mapping[str, Any] | None = None, fresh: Iterable[str] = (),
                     force: bool = False, state_files: Iterable[str | Path] = (),
                     follows: Point | None = None) -> Point | None:
        """Commit a restore point of the configured state files (and `state_files`) as
        they stand, backing up any live file no backup holds; None when nothing changed
        since the newest point, unless `force`. `fresh` names files started over on
        purpose."""
        with self.folder.locked():
            point = self._commit(kind, reason, details=details, fresh=fresh, force=force,
                                 extra=[Path(p) for p in state_files], follows=follows)
        self.copier.send_owed()
        return point

    def claim_point(self, kind: str, reason: str = "", *,
                    details: Mapping[str, Any] | None = None,
                    require_fence: bool | None = None) -> tuple[Point, dict[str, str]]:
        """Commit a point (an intent before orders) that is first created, exclusively,
        in every copy target that answers, then here: two writers can never both hold
        its number. Returns the point and the targets that could not be asked (target
        id -> why): they are owed it as usual. Raises WriterConflict when a target holds
        another point under the number (another writer moved: nothing may go ahead),
        and, with `require_fence`, when a target could not be asked."""
        unfenced: dict[str, str] = {}
        if require_fence is None:
            require_fence = self.require_fence

        def publish(point: Point, data: bytes) -> list[str]:
            from .formats import sidecar_text
            reached = []
            for target_id, target in self.copier.targets.items():
                if target_id in self.copier.unreachable:
                    unfenced[target_id] = self.copier.unreachable[target_id]
                    continue
                try:
                    target.prepare()
                    target.write(point.name, data)
                    target.write(point.name + SIDECAR_SUFFIX,
                                 sidecar_text(sha256_hex(data), point.name))
                except UploadConflict:
                    raise WriterConflict(
                        f"{target.label} already holds another restore point {point.sequence}"
                        ": another writer committed it first") from None
                except StoreUnreachable as exc:
                    self.copier.note_unreachable(target_id, exc)
                    unfenced[target_id] = str(exc)
                    continue
                reached.append(target_id)
            if unfenced and require_fence:
                raise WriterConflict(
                    "no claim without every store (backup.require_fence): " + "; ".join(
                        f"{self.copier.targets[t].label}: {why}" for t, why in unfenced.items()))
            return reached

        try:
            with self.folder.locked():
                point = self._commit(kind, reason, details=details, force=True,
                                     publish=publish)
        except WriterConflict as exc:
            self._record_claim_refused(exc)
            raise
        except (BackupError, OSError) as exc:
            raise IntentNotCommitted(f"the intent before orders could not be committed in "
                                     f"{self.backup_dir} ({exc}): no order was placed; fix "
                                     "the backups folder and run again") from exc
        self.copier.send_owed()
        return point, unfenced

    def _record_claim_refused(self, exc: WriterConflict) -> None:
        """What `status` shows while the history belongs to another writer."""
        try:
            self.folder.record_recovery({
                "time": datetime.now(UTC).isoformat(), "unseen": {},
                "refused": {"kind": "writer", "headline": "another machine has moved this "
                            "history on", "reasons": [["site", str(exc)]],
                            "commands": ["python -m backup_manager restore --all --yes"]}})
        except OSError as error:
            log.error("cannot record the refused claim in %s: %s", self.backup_dir, error)

    @contextmanager
    def changes(self, kind: str = "run", reason: str = "",
                details: Mapping[str, Any] | None = None,
                commit_failed: Callable[[Exception], None] | None = None
                ) -> Iterator[dict[str, str]]:
        """Group the backups made inside into one restore point, committed at the end
        (also when the block raises: what was saved is the state now). A commit that
        fails raises, or is handed to `commit_failed` (a host whose state is saved
        records it and goes on, promise 6); under a block that raised it is logged.
        Yields {"reason": reason}: the block may change why the point is made."""
        self._batch.append({})
        failed = True
        note = {"reason": reason}
        try:
            yield note
            failed = False
        finally:
            made = self._batch.pop()
            if not self._batch:
                try:
                    with self.folder.locked():
                        self._commit(kind, note["reason"], details=details, made=made)
                    self.copier.send_owed()
                except (BackupError, OSError) as exc:
                    log.error("cannot commit the restore point%s: %s",
                              " of a failed run" if failed else "", exc)
                    if commit_failed is not None:
                        commit_failed(exc)
                    elif not failed:
                        raise

    def _commit(self, kind: str, reason: str, *, details: Mapping[str, Any] | None = None,
                made: Mapping[str, tuple[str, str, datetime]] = {}, fresh: Iterable[str] = (),
                force: bool = False, extra: Iterable[Path] = (),
                names: list[str] | None = None, follows: Point | None = None,
                publish: Callable[[Point, bytes], Iterable[str]] | None = None
                ) -> Point | None:
        from .commit import commit_point
        files = list(self.state_files)
        files += [p for p in extra if p.name not in {f.name for f in files}]
        point = commit_point(self.folder, files, writer=self.writer, kind=kind, reason=reason,
                             record=self.copier.record, details=details, made=made,
                             fresh=fresh, seen=self.seen_sequence, force=force, names=names,
                             follows=follows, publish=publish)
        if point is not None:
            self.seen_sequence = max(self.seen_sequence, point.sequence)
        return point

    def _commit_after(self, key: StateKey, path: Path,
                      made: Mapping[str, tuple[str, str, datetime]],
                      names: list[str]) -> Point | None:
        """The point of a bare backup. The backup is made whatever happens here: a point
        that fails is logged, and the next start-up catches it up."""
        try:
            point = self._commit(PointKind.BACKUP, f"backup of {key.file_name}", made=made,
                                 extra=[path], names=names)
            if point is not None:
                return point  # its folder sync made the backup's names durable too
        except (BackupError, OSError) as exc:
            log.error("backed up %s, but its restore point failed: %s", path, exc)
        try:
            self.store.sync()
        except OSError as exc:
            # A backup whose name may not survive a power cut is no backup: the caller
            # is told it failed, so it must not be there. Sidecar first, as in prune.
            name = made[key.file_name][0]
            self.store.remove(name + SIDECAR_SUFFIX)
            self.store.remove(name)
            raise storage_error(exc, f"cannot sync {self.backup_dir}") from None
        return None

    def _stamp(self, backups: BackupSet, now: datetime) -> datetime:
        stamp = next_stamp(backups, now, self.store.is_object)
        if stamp != now:
            log.warning("the clock (%s) is behind the newest backup of %s: naming the new "
                        "backup %s, just after it", now.isoformat(), backups.key.file_name,
                        stamp.isoformat())
        return stamp

    def _prune_quietly(self, key: StateKey, known_good: str, files: list[str],
                       backups: BackupSet) -> None:
        # The backup is already safe on disk; a failed clean-up must not undo that.
        try:
            prune_backups(self.folder, self.mirrors, self.policy, key, dry_run=False,
                          targets=self.copier.targets, known_good=known_good,
                          removals_only=True, files=files, sets={key: backups})
        except (OSError, BackupError) as exc:
            log.error("pruning old backups of %s failed: %s", key.file_name, exc)


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


    def list_backups(self, state_file_path: str | Path) -> list[BackupInfo]:
        """Local backups of one state file, newest first (incomplete ones included)."""
        return [BackupInfo(b.name, self.backup_dir / b.name, b.when, self.store.size(b.name),
                           complete)
                for b, complete in backups_of(self.store, state_key(state_file_path))]

    def backed_up_files(self) -> list[str]:
        """File names (stem + suffix) of every state file with backups in backups/."""
        return state_files_in(self.store.scan()[0])

    def verify(self, state_file_path: str | Path | None = None, *,
               cloud: bool = False) -> VerifyReport:
        """Check every backup (of one state file, or all) in backups/, mirrors and, with
        cloud=True, S3: checksum, sidecar, content, completeness."""
        keys = [state_key(state_file_path)] if state_file_path is not None else None
        stores: list[Store] = [self.store, *self.mirrors.values()]
        if cloud:
            if self.cloud is None:
                raise ConfigError("verify --cloud needs backup.cloud_enabled and backup.s3_bucket")
            stores.append(self.cloud)
        from .verify import verify_stores, verify_uploaded
        report = verify_stores(self.folder, stores, keys)
        if cloud:
            verify_uploaded(self.folder, self.cloud, CLOUD_TARGET, keys, report)
        return report

    def prune(self, state_file_path: str | Path | None = None,
              dry_run: bool = False) -> list[Decision]:
        """Apply the retention plan (to one state file, or all); return every decision."""
        key = state_key(state_file_path) if state_file_path is not None else None
        if dry_run:
            return prune_backups(self.folder, self.mirrors, self.policy, key, dry_run=True,
                                 targets=self.copier.targets)
        with self.folder.locked():
            return prune_backups(self.folder, self.mirrors, self.policy, key, dry_run=False,
                                 targets=self.copier.targets)

    def sync(self, progress: Callable[[int, int], None] | None = None) -> SyncResult:
        """Send every pending copy, after queueing complete local backups a target lacks."""
        names = self.store.list_names()
        complete = [b.name for s in group_backups(names, None).values() for b in s.complete()]
        complete += [point_name(n) for n in sorted(points_in(names)[0])]
        return self.copier.sync(complete, progress)

    # --- what the command line and the page ask about copies -----------------------------

    def copy_targets(self) -> dict[str, str]:
        """Each configured copy target's id and label (a mirror's folder, s3://...)."""
        return {t_id: t.label for t_id, t in self.copier.targets.items()}

    def pending_copies(self, target: str | None = None) -> list[PendingCopy]:
        """The copies owed (to one target, or every one), oldest first."""
        return self.outbox.pending(target)

    def unconfigured_copies(self) -> list[dict[str, Any]]:
        """Copies owed to targets no longer configured: per target, how many, how old."""
        from .status import unconfigured_copies
        return unconfigured_copies(self.outbox.pending(), self.copier.targets,
                                   self.folder.clock())

    def forget_copies(self, target: str) -> list[str]:
        """Drop, on purpose, the copies owed to `target` (a target id): all of them when
        it is no longer configured, the conflicting ones (never retried) when it is.
        Returns the names dropped ([]: nothing to drop)."""
        configured = target in self.copier.targets
        with self.folder.locked():
            self.copier.claim()  # a queue another store was owed is set aside first
            owed = [c.name for c in self.outbox.pending(target)
                    if c.conflict or not configured]
            for name in owed:
                self.outbox.forget(target, name)
        return owed

    def cloud_view(self) -> tuple[set[str] | None, set[str]]:
        """What the bucket holds (None: no cloud, or it cannot be listed) and which
        copies to it are pending."""
        if self.cloud is None:
            return None, set()
        pending = {c.name for c in self.outbox.pending(CLOUD_TARGET)}
        try:
            return set(self.cloud.list_names("")), pending
        except BackupError as exc:
            log.warning("cannot list the cloud: %s", exc)
            return None, pending

    def cloud_label(self) -> str | None:
        """The bucket's label (s3://bucket/prefix); None without cloud backup."""
        return self.cloud.label if self.cloud is not None else None

    def cloud_listing(self) -> list[str]:
        """Every name in the bucket (raises StoreUnreachable when it cannot be listed)."""
        return self.cloud.list_names("") if self.cloud is not None else []

    def copies_of(self, keys: list[StateKey], cloud_names: list[str] | None = None
                  ) -> tuple[list[tuple[str, str, BackupName, bool]], list[str]]:
        """Every copy of the backups of the state files `keys`: (where: local, mirror or
        cloud; the store's label; the backup; complete), and the stores that could not
        be listed. `cloud_names`, the bucket's listing when the caller has one."""
        found, unseen = [], []
        stores = [("local", self.store), *(("mirror", m) for m in self.mirrors.values())]
        for where, store in stores:
            for key in keys:
                try:
                    found += [(where, store.label, b, complete)
                              for b, complete in backups_of(store, key)]
                except OSError as exc:
                    unseen.append(f"{store.label}: {exc}")
                    break
        if self.cloud is not None and cloud_names is not None:
            sets = group_backups(cloud_names, keys)
            found += [("cloud", self.cloud.label, b, complete)
                      for key in keys if key in sets for b, complete in sets[key]]
        return found, unseen

    def backup_verifies(self, name: str) -> bool:
        """Whether backup `name` in backups/ matches its sidecar."""
        try:
            fetch_verified(self.store, name, max_bytes=self.max_state_bytes)
        except BackupError:
            return False
        return True

    def status(self) -> dict[str, Any]:
        """Facts for monitoring: newest valid backup and its age per state file, disk
        use, and per copy target the pending count, oldest pending age, last success
        and last error."""
        from .status import status_facts
        return status_facts(self.folder, self.state_files, self.copier.targets)


def _live_digest(path: Path) -> str | None:
    try:
        return sha256_hex(read_state_file(path)[0])
    except OSError:
        return None


def _mirror_id(folder: Path) -> str:
    return "mirror-" + sha256_hex(os.fsencode(os.path.abspath(folder)))[:12]
