"""BackupManager: back up, restore, verify and prune state files.

Local backups are taken under an inter-process lock on the backups folder;
copies to mirror folders and S3 are made outside it, through the outbox, so a
slow endpoint never blocks a local backup and a failed copy is retried later.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections import namedtuple
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from . import log
from .atomic import atomic_write, file_lock, fsync_dir
from .config import backup_options, load_config_file, number
from .copies import Copier, SyncResult
from .errors import (
    BackupError,
    CloudError,
    ConfigError,
    IntegrityError,
    InvalidStateError,
    NoValidBackupError,
    UploadConflict,
    storage_error,
)
from .formats import (
    SIDECAR_SUFFIX,
    TEMP_MARK,
    BackupName,
    backup_from_stamp,
    check_timestamp_prefix,
    fetch_verified,
    parse_any_backup_name,
    sha256_hex,
    sidecar_text,
    stamp_time,
    state_key,
    validate_content,
)
from .local import LocalStore
from .outbox import Outbox, PendingCopy
from .retention import GRACE_PERIOD, Decision, RetentionPolicy, plan_cleanup, plan_retention

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    from typing import Any


CLOUD_TARGET = "s3"
_STAMP_SHAPE = r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d(?:\.\d{6}Z)?"
CORRUPT_DIR = "corrupt"
LOCK_FILE = ".lock"
OUTBOX_DIR = ".outbox"


# Named tuples, not dataclasses: importing dataclasses (and typing) costs a cron run
# more time than a whole backup does.
_INFO_FIELDS = "name path timestamp size complete location"


class BackupInfo(namedtuple("BackupInfo", _INFO_FIELDS, defaults=("local",))):
    """One backup as listed: name, path (None when remote), timestamp (the aware UTC
    instant in its name), size, complete (has its sidecar), location."""

    __slots__ = ()


class RestoreResult(namedtuple("RestoreResult", _INFO_FIELDS + " changed replaced kept_as skipped",
                               defaults=("local", True, None, None, ()))):
    """The backup restore chose (BackupInfo's fields), and what it did: `changed` is False
    when the file already held it; `replaced` is None, "valid" or "invalid"; `kept_as`
    is where the replaced file went; `skipped` lists (backup, why) passed over."""

    __slots__ = ()


class VerifyItem(namedtuple("VerifyItem", "location name status detail", defaults=("",))):
    __slots__ = ()

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "in progress")


class VerifyReport:
    def __init__(self) -> None:
        self.items: list[VerifyItem] = []

    @property
    def ok(self) -> bool:
        return all(item.ok for item in self.items)

    @property
    def problems(self) -> list[VerifyItem]:
        return [item for item in self.items if not item.ok]


class StateFileGroup:
    """The backups of one state file in one store, found from names alone (no stat).

    Iterating yields (BackupName, complete) newest first, building each BackupName
    only when reached, so a restore that stops at the newest valid backup never
    pays for the thousands behind it.
    """

    __slots__ = ("stem", "suffix", "stamps", "complete", "orphans")

    def __init__(self, stem: str, suffix: str, stamps: list[str], sidecars: set[str]):
        self.stem, self.suffix = stem, suffix
        present = set(stamps)
        self.complete = sidecars & present
        self.stamps = _newest_first(stem, suffix, stamps)
        self.orphans = [f"{stem}_{t}{suffix}{SIDECAR_SUFFIX}" for t in sorted(sidecars - present)]

    def __iter__(self) -> Iterator[tuple[BackupName, bool]]:
        for stamp in self.stamps:
            backup = self.name(stamp)
            if backup is not None:
                yield backup, stamp in self.complete

    def __len__(self) -> int:
        return len(self.stamps)

    def name(self, stamp: str) -> BackupName | None:
        """The parsed backup, or None for a name whose date cannot exist (13th month)."""
        return backup_from_stamp(self.stem, self.suffix, stamp)

    def complete_times(self) -> list[tuple[str, datetime]]:
        """(name, UTC instant) of each complete backup, newest first: what retention
        plans with. As in name(), a name whose date cannot exist is left out."""
        timed = []
        for stamp in self.stamps:
            if stamp in self.complete:
                try:
                    timed.append((f"{self.stem}_{stamp}{self.suffix}", stamp_time(stamp)))
                except ValueError:
                    continue
        return timed

    def completed(self) -> Iterator[BackupName]:
        return self._parsed(t for t in self.stamps if t in self.complete)

    def incomplete(self) -> list[BackupName]:
        return list(self._parsed(t for t in self.stamps if t not in self.complete))

    def _parsed(self, stamps: Iterable[str]) -> Iterator[BackupName]:
        return (b for b in map(self.name, stamps) if b is not None)


class _Search:
    """What a restore looked at: for the error message and for start-up evidence."""

    def __init__(self) -> None:
        self.tried: list[tuple[str, str]] = []
        self.found = 0
        self.unreachable: list[str] = []

    def cannot_ask(self, location: str, store: Any, why: str) -> None:
        self.tried.append((store.label, why))
        if location == CLOUD_TARGET:
            self.unreachable.append(store.label)


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
                 clock: Callable[[], datetime] | None = None):
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
        self.lock_timeout = number("lock_timeout", lock_timeout)
        self.state_files = [Path(p) for p in state_files]
        self.store = LocalStore(self.backup_dir, durable=self.durable)
        self.outbox = Outbox(self.backup_dir / OUTBOX_DIR, durable=self.durable)
        self.mirrors = {_mirror_id(Path(d)): LocalStore(d, durable=self.durable)
                        for d in mirror_dirs}
        self.cloud = None
        if cloud_enabled:
            from .s3 import S3Store

            self.cloud = S3Store(s3_bucket, s3_prefix, endpoint_url=s3_endpoint_url,
                                 region=s3_region, sse=s3_sse, kms_key_id=s3_kms_key_id,
                                 expected_owner=s3_expected_bucket_owner,
                                 client_config=dict(s3_client_config or {}))
        targets: dict[str, Any] = dict(self.mirrors)
        if self.cloud is not None:
            targets[CLOUD_TARGET] = self.cloud
        self.copier = Copier(self.store, self.outbox, targets)
        self._clock = clock or (lambda: datetime.now(UTC))

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

    # --- backup -------------------------------------------------------------

    def backup_state_file(self, state_file_path: str | Path) -> Path | None:
        """Back up one state file; return the new backup's path, or None if it is missing.

        When this returns, the backup and its sidecar are on disk (unless
        durable=False). Invalid content raises InvalidStateError and changes
        nothing. Copies to mirrors and S3 never raise: failures wait in the outbox.
        """
        path = Path(state_file_path)
        stem, suffix = state_key(path)
        try:
            data, mode = _read_state(path)
        except FileNotFoundError:
            log.info("nothing to back up: %s does not exist", path)
            return None
        except OSError as exc:
            raise storage_error(exc, f"cannot read {path}") from None
        validate_content(path.name, data)
        with self._locked():
            try:
                name = self.store.create_backup(stem, suffix, data, mode, self._clock())
            except OSError as exc:
                raise storage_error(exc, f"cannot write a backup of {path} in "
                                         f"{self.backup_dir}") from None
            self._prune_quietly((stem, suffix), known_good=name)
        log.info("backed up %s as %s", path, name)
        self.copier.owe(name)
        return self.backup_dir / name

    def _prune_quietly(self, key: tuple[str, str], known_good: str) -> None:
        # The backup is already safe on disk; a failed clean-up must not undo that.
        try:
            self._prune_locked(key, dry_run=False, known_good=known_good, removals_only=True)
        except (OSError, BackupError) as exc:
            log.error("pruning old backups of %s%s failed: %s", *key, exc)

    # --- restore ------------------------------------------------------------

    def restore_from_backup(self, state_file_path: str | Path,
                            backup_timestamp: str | None = None) -> bool:
        """The specification's call: True when the state file now holds a valid backup.

        Falls back past damaged backups; False (logged) when none is valid.
        A `backup_timestamp` that is not a timestamp prefix raises ValueError.
        """
        try:
            self.restore(state_file_path, timestamp=backup_timestamp)
        except NoValidBackupError as exc:
            log.error("%s", exc)
            return False
        return True

    def restore(self, state_file_path: str | Path, *, timestamp: str | None = None,
                dry_run: bool = False, source: str = "auto") -> RestoreResult:
        """Restore the newest valid backup (whose timestamp starts with `timestamp`).

        `source` is "auto" (local folders, then S3), "local" or "cloud". The
        backup is verified before anything becomes visible and installed
        atomically; a replaced valid file is kept as a backup, an invalid one
        under backups/corrupt/. Raises NoValidBackupError listing what was tried.
        """
        prefix = check_timestamp_prefix(timestamp)
        if source not in ("auto", "local", "cloud"):
            raise ValueError(f"source must be auto, local or cloud, got {source!r}")
        path = Path(state_file_path)
        key = state_key(path)
        search = _Search()
        for location, store in self._sources(source):
            found = self._newest_valid(store, location, key, prefix, search)
            if found is not None:
                backup, data = found
                return self._install(path, location, store, backup, data, dry_run,
                                     search.tried)
        wanted = f" with a timestamp starting {prefix!r}" if prefix else ""
        raise NoValidBackupError(
            f"no valid backup of {path}{wanted} ({_summary(search.tried)})",
            search.tried, found=search.found, unreachable=search.unreachable)

    def _sources(self, source: str) -> Iterator[tuple[str, Any]]:
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

    def _newest_valid(self, store: Any, location: str, key: tuple[str, str],
                      prefix: str | None, search: _Search) -> tuple[BackupName, bytes] | None:
        if location in self.copier.unreachable:
            search.cannot_ask(location, store,
                              "not asked again: " + self.copier.unreachable[location])
            return None
        try:
            group = self._group(store, key)
        except (CloudError, OSError) as exc:
            self.copier.note_unreachable(location, exc)
            search.cannot_ask(location, store, f"cannot list: {exc}")
            return None
        for backup, _complete in group:
            if prefix and not backup.stamp.startswith(prefix):
                continue
            search.found += 1
            try:
                data = _fetch_valid(store, backup)
            except (IntegrityError, InvalidStateError, OSError) as exc:
                # One unreadable file is one bad backup: the older ones may be fine.
                log.warning("skipping backup %s in %s: %s", backup.name, store.label, exc)
                search.tried.append((f"{store.label}/{backup.name}", str(exc)))
                continue
            except CloudError as exc:
                self.copier.note_unreachable(location, exc)
                search.cannot_ask(location, store, f"cannot read {backup.name}: {exc}")
                return None
            return backup, data
        if not group:
            search.tried.append((store.label, "no backups"))
        return None

    def _install(self, path: Path, location: str, store: Any, backup: BackupName, data: bytes,
                 dry_run: bool, tried: list[tuple[str, str]]) -> RestoreResult:
        result = dict(name=backup.name, path=_local_path(store, backup.name),
                      timestamp=backup.when, size=len(data), complete=True, location=location,
                      skipped=tuple(tried))
        live = _read_live(path)
        if live == data:
            log.info("%s already holds backup %s; nothing to change", path, backup.name)
            return RestoreResult(**result, changed=False)
        replaced = None if live is None else ("valid" if _is_valid(path.name, live) else "invalid")
        if dry_run:
            return RestoreResult(**result, replaced=replaced)
        with self._locked():
            live = _read_live(path)
            kept_as = None
            try:
                if live is not None and live != data:
                    kept_as = self._keep_replaced(path, live)
                if location != "local":
                    self._put_back(backup.name, data)
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(path, data, durable=self.durable, mode=_backup_mode(store, backup))
            except OSError as exc:
                raise storage_error(exc, f"cannot restore {path}") from None
        log.info("restored %s from %s (%s)", path, backup.name, store.label)
        return RestoreResult(**result, replaced=replaced, kept_as=kept_as)

    def _keep_replaced(self, path: Path, live: bytes) -> str:
        stem, suffix = state_key(path)
        mode = _file_mode(path)
        if _is_valid(path.name, live):
            name = self.store.create_backup(stem, suffix, live, mode, self._clock())
            log.info("kept the replaced %s as backup %s", path, name)
            for target_id in self.copier.targets:
                self.outbox.add(target_id, name)  # sent with the next backup or sync
            return name
        corrupt = LocalStore(self.backup_dir / CORRUPT_DIR, durable=self.durable)
        corrupt.ensure()
        name = corrupt.create_backup(stem, suffix, live, mode, self._clock())
        log.warning("kept the invalid %s as %s/%s", path, CORRUPT_DIR, name)
        return f"{CORRUPT_DIR}/{name}"

    def _put_back(self, name: str, data: bytes) -> None:
        # A backup fetched from elsewhere becomes local again, sidecar last.
        try:
            self.store.write(name, data)
            self.store.write(name + SIDECAR_SUFFIX, sidecar_text(sha256_hex(data), name))
        except (UploadConflict, OSError) as exc:
            log.error("could not put %s back into %s: %s", name, self.backup_dir, exc)

    def quarantine(self, state_file_path: str | Path) -> list[str]:
        """Move every local backup of one state file, and the live file if invalid,
        into backups/corrupt/: a deliberate fresh start, never a deletion."""
        path = Path(state_file_path)
        key = state_key(path)
        moved = []
        with self._locked():
            corrupt = self.backup_dir / CORRUPT_DIR
            try:
                corrupt.mkdir(mode=0o700, exist_ok=True)
                group = self._group(self.store, key)
                names = [n for b, _ in group for n in (b.name + SIDECAR_SUFFIX, b.name)]
                for name in names + group.orphans:
                    if self.store.read(name) is not None:
                        os.replace(self.backup_dir / name, corrupt / name)
                        moved.append(f"{CORRUPT_DIR}/{name}")
                live = _read_live(path)
                if live is not None and not _is_valid(path.name, live):
                    moved.append(self._keep_replaced(path, live))
                    path.unlink()
                if self.durable:
                    fsync_dir(corrupt)
                    fsync_dir(self.backup_dir)
            except OSError as exc:
                raise storage_error(exc, f"cannot move backups of {path} aside") from None
        for name in moved:
            log.warning("moved %s aside for a fresh start of %s", name, path)
        return moved

    # --- listing and verification ------------------------------------------

    def list_backups(self, state_file_path: str | Path) -> list[BackupInfo]:
        """Local backups of one state file, newest first (incomplete ones included)."""
        group = self._group(self.store, state_key(state_file_path))
        return [BackupInfo(b.name, self.backup_dir / b.name, b.when,
                           self.store.size(b.name), complete)
                for b, complete in group]

    def backed_up_files(self) -> list[str]:
        """File names (stem + suffix) of every state file with backups in backups/."""
        return sorted(stem + suffix for stem, suffix in _group_names(self.store.scan()[0], None))

    def verify(self, state_file_path: str | Path | None = None, *,
               cloud: bool = False) -> VerifyReport:
        """Check every backup (of one state file, or all) in backups/, mirrors and, with
        cloud=True, S3: checksum, sidecar, content, completeness."""
        keys = [state_key(state_file_path)] if state_file_path is not None else None
        report = VerifyReport()
        stores: list[tuple[str, Any]] = [("local", self.store), *self.mirrors.items()]
        if cloud:
            if self.cloud is None:
                raise ConfigError("verify --cloud needs backup.cloud_enabled and backup.s3_bucket")
            stores.append((CLOUD_TARGET, self.cloud))
        for _location, store in stores:
            try:
                # Locally only regular files count: a symlink or folder is reported apart.
                names, strays = store.scan() if isinstance(store, LocalStore) else \
                    (store.list_names(""), [])
                groups = _group_names(names, keys)
            except (CloudError, OSError) as exc:
                report.items.append(VerifyItem(store.label, "", "unreachable", str(exc)))
                continue
            for group in groups.values():
                self._verify_group(store, group, report)
            if store is self.store:
                self._report_strays(store, strays, report, keys)
        if cloud:
            self._verify_uploaded(report, keys)
        return report

    def _verify_group(self, store: Any, group: StateFileGroup, report: VerifyReport) -> None:
        for backup, complete in group:
            status, detail = "ok", ""
            try:
                _fetch_valid(store, backup)
            except IntegrityError as exc:
                status, _, detail = str(exc).partition(": ")
                if not complete and self._is_fresh(store, backup):
                    status = "in progress"
            except InvalidStateError as exc:
                status, detail = "invalid content", str(exc)
            except (CloudError, OSError) as exc:
                status, detail = "unreadable", str(exc)
            report.items.append(VerifyItem(store.label, backup.name, status, detail))
        for sidecar in group.orphans:
            report.items.append(VerifyItem(store.label, sidecar, "orphan sidecar",
                                           "its backup is missing"))

    def _report_strays(self, store: Any, strays: list[str], report: VerifyReport,
                       keys: list[tuple[str, str]] | None) -> None:
        for name in strays:
            parsed = parse_any_backup_name(name)
            if parsed and (keys is None or (parsed.stem, parsed.suffix) in keys):
                report.items.append(VerifyItem(store.label, name, "not a regular file",
                                               "a symlink or folder where a backup belongs"))

    def _verify_uploaded(self, report: VerifyReport, keys: list[tuple[str, str]] | None) -> None:
        pending = {c.name for c in self.outbox.pending(CLOUD_TARGET)}
        try:
            remote = set(self.cloud.list_names(""))  # type: ignore[union-attr]
        except CloudError:
            return  # already reported as unreachable
        for (_stem, _suffix), group in self._groups(self.store, keys).items():
            for backup, complete in group:
                if complete and backup.name not in remote:
                    status = "upload pending" if backup.name in pending else "not uploaded"
                    report.items.append(VerifyItem(self.cloud.label, backup.name, status,  # type: ignore[union-attr]
                                                   "local backup has no copy in the cloud"))

    def _is_fresh(self, store: Any, backup: BackupName) -> bool:
        if not isinstance(store, LocalStore):
            return False
        mtime = store.mtime(backup.name)
        limit = (self._clock() - GRACE_PERIOD).timestamp()
        return mtime is not None and mtime >= limit and backup.when.timestamp() >= limit

    # --- retention ------------------------------------------------------------

    def prune(self, state_file_path: str | Path | None = None,
              dry_run: bool = False) -> list[Decision]:
        """Apply the retention plan (to one state file, or all); return every decision."""
        key = state_key(state_file_path) if state_file_path is not None else None
        if dry_run:
            return self._prune_locked(key, dry_run=True)
        with self._locked():
            return self._prune_locked(key, dry_run=False)

    def _prune_locked(self, key: tuple[str, str] | None, *, dry_run: bool,
                      known_good: str | None = None, removals_only: bool = False
                      ) -> list[Decision]:
        files = self.store.list_names()
        groups = _group_names(files, [key] if key else None)
        waiting = self.outbox.pending_names()
        plan: list[Decision] = []
        for group in groups.values():
            if removals_only and len(group.complete) <= self.policy.keep_last:
                continue  # keep_last alone keeps them all: no need for their times
            plan += self._plan_group(group, waiting, known_good)
        plan += plan_cleanup(self._leftovers(files, groups, key), self._clock())
        if not dry_run:
            self._apply(plan)
        return plan

    def _plan_group(self, group: StateFileGroup, waiting: set[str],
                    known_good: str | None) -> list[Decision]:
        timed = group.complete_times()
        names = {name for name, _ in timed}
        if known_good not in names:
            known_good = getattr(self._first_verified(group.completed()), "name", None)
        protect = {name: "waiting for upload" for name in waiting & names}
        if known_good is not None:
            protect[known_good] = "newest valid backup"
        return plan_retention(timed, self.policy, protect)

    def _first_verified(self, newest_first: Iterable[BackupName]) -> BackupName | None:
        for backup in newest_first:
            try:
                _fetch_valid(self.store, backup)
                return backup
            except (IntegrityError, InvalidStateError, OSError):
                continue
        return None

    def _leftovers(self, files: list[str], groups: Mapping[tuple[str, str], StateFileGroup],
                   key: tuple[str, str] | None) -> list[tuple[str, str, datetime | None, datetime]]:
        found: list[tuple[str, str, datetime | None]] = []
        for group in groups.values():
            found += [(b.name, "incomplete backup", b.when) for b in group.incomplete()]
            found += [(s, "orphan sidecar", _sidecar_time(s)) for s in group.orphans]
        temp_start = "." + (key[0] + "_" if key else "")
        found += [(f, "temp file", None) for f in files
                  if TEMP_MARK in f and f.startswith(temp_start)]
        leftovers = []
        for name, kind, when in found:
            mtime = self.store.mtime(name)
            if mtime is not None:
                leftovers.append((name, kind, when, datetime.fromtimestamp(mtime, UTC)))
        return leftovers

    def _apply(self, plan: list[Decision]) -> None:
        for decision in plan:
            if decision.keep:
                continue
            # Sidecar first: an interrupted prune leaves an incomplete backup, never a
            # sidecar that vouches for nothing.
            if decision.name.endswith(SIDECAR_SUFFIX) or TEMP_MARK in decision.name:
                self.store.remove(decision.name)
            else:
                for store in (self.store, *self.mirrors.values()):
                    _remove_backup(store, decision.name)
            log.info("pruned %s: %s", decision.name, decision.reason)

    # --- copies to mirrors and S3 -----------------------------------------------

    def sync(self, progress: Callable[[int, int], None] | None = None) -> SyncResult:
        """Send every pending copy, after queueing complete local backups a target lacks."""
        complete = [b.name for g in self._groups(self.store, None).values()
                    for b in g.completed()]
        return self.copier.sync(complete, progress)

    # --- status -------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Facts for monitoring: newest valid backup and its age per state file, disk
        use, and per copy target the pending count, oldest pending age, last success
        and last error."""
        now = self._clock()
        files, _ = self.store.scan()
        groups = _group_names(files, None)
        keys = [state_key(p) for p in self.state_files] or sorted(groups)
        pending = self.outbox.pending()
        return {
            "backup_dir": str(self.backup_dir),
            "disk_bytes": sum(self.store.size(f) or 0 for f in files),
            "state_files": [self._state_status(k, groups.get(k), now) for k in keys],
            "targets": [self._target_status(t_id, t, pending, now)
                        for t_id, t in self.copier.targets.items()],
        }

    def _state_status(self, key: tuple[str, str], group: StateFileGroup | None,
                      now: datetime) -> dict[str, Any]:
        group = group or StateFileGroup(*key, [], set())
        newest = self._first_verified(group.completed())
        when = newest.when if newest else None
        return {
            "state_file": key[0] + key[1],
            "backups": len(group),
            "complete": len(group.complete),
            "newest_valid": newest.name if newest else None,
            "newest_valid_time": when.isoformat() if when else None,
            "newest_valid_age_seconds": (now - when).total_seconds() if when else None,
        }

    def _target_status(self, target_id: str, target: Any, pending: list[PendingCopy],
                       now: datetime) -> dict[str, Any]:
        mine = [c for c in pending if c.target == target_id]
        errors = [c for c in mine if c.last_error]
        last_ok = self.outbox.last_success(target_id)
        return {
            "target": target.label,
            "pending": len(mine),
            "conflicts": sum(c.conflict for c in mine),
            "oldest_pending_age_seconds":
                (now - min(c.queued_at for c in mine)).total_seconds() if mine else None,
            "last_success": last_ok.isoformat() if last_ok else None,
            "last_error": errors[-1].last_error if errors else None,
        }

    # --- helpers --------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.store.ensure()
            if not self.backup_dir.is_dir():
                raise NotADirectoryError(20, "not a folder", str(self.backup_dir))
            lock = file_lock(self.backup_dir / LOCK_FILE, self.lock_timeout,
                             "backups folder lock")
            lock.__enter__()
        except OSError as exc:
            raise storage_error(exc, f"cannot use backups folder {self.backup_dir}") from None
        try:
            yield
        finally:
            lock.__exit__(None, None, None)

    def _group(self, store: Any, key: tuple[str, str]) -> StateFileGroup:
        return self._groups(store, [key]).get(key, StateFileGroup(*key, [], set()))

    def _groups(self, store: Any, keys: list[tuple[str, str]] | None
                ) -> dict[tuple[str, str], StateFileGroup]:
        prefix = keys[0][0] + "_" if keys and len(keys) == 1 else ""
        return _group_names(store.list_names(prefix), keys)


def _fetch_valid(store: Any, backup: BackupName) -> bytes:
    """The backup's bytes, matching its sidecar and valid as its state file's content."""
    data = fetch_verified(store, backup.name)
    validate_content(backup.stem + backup.suffix, data)
    return data


def _group_names(names: Iterable[str], keys: list[tuple[str, str]] | None
                 ) -> dict[tuple[str, str], StateFileGroup]:
    """Group backup and sidecar names by state file, from names alone (no stat).

    The names are joined once and each state file's backups are found with one
    regular-expression scan, so ten thousand backups cost milliseconds.
    """
    names = list(names)
    if keys is None:
        keys = sorted({(p.stem, p.suffix) for p in map(_any_backup, names) if p})
    text = "\0" + "\0".join(names) + "\0"
    groups = {}
    for stem, suffix in keys:
        stamps, sidecars = _stamps_in(text, stem, suffix)
        if stamps or sidecars:
            groups[(stem, suffix)] = StateFileGroup(stem, suffix, stamps, sidecars)
    return groups


def _any_backup(name: str) -> BackupName | None:
    if name.endswith(SIDECAR_SUFFIX):
        name = name[: -len(SIDECAR_SUFFIX)]
    return parse_any_backup_name(name)


def _stamps_in(text: str, stem: str, suffix: str) -> tuple[list[str], set[str]]:
    """(stamps of backups, stamps of sidecars) of one state file in the joined names.

    The scan only checks the shape of each stamp; the calendar is checked when a
    backup is reached (StateFileGroup.name), so it is paid for the few looked at.
    """
    # NUL never occurs in a file name: it marks where each name starts and ends.
    found = re.findall(f"\0{re.escape(stem)}_({_STAMP_SHAPE}){re.escape(suffix)}"
                       f"({re.escape(SIDECAR_SUFFIX)})?(?=\0)", text)
    return [t for t, side in found if not side], {t for t, side in found if side}


def _newest_first(stem: str, suffix: str, stamps: list[str]) -> list[str]:
    """Stamps ordered by the instant they denote, newest first.

    New-style stamps are UTC and fixed-width, so plain string order is time order;
    only legacy local-time stamps need a datetime to find their place.
    """
    legacy = [t for t in stamps if not t.endswith("Z")]
    if not legacy:
        return sorted(stamps, reverse=True)
    keyed = [(t, t) for t in stamps if t.endswith("Z")]
    for stamp in legacy:
        parsed = backup_from_stamp(stem, suffix, stamp)
        if parsed is not None:
            keyed.append((parsed.order, stamp))
    keyed.sort(reverse=True)
    return [t for _, t in keyed]


def _sidecar_time(sidecar: str) -> datetime | None:
    parsed = parse_any_backup_name(sidecar[: -len(SIDECAR_SUFFIX)])
    return parsed.when if parsed else None


def _read_state(path: Path) -> tuple[bytes, int]:
    # O_NONBLOCK: a FIFO planted at the state path must not hang the trading run.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    with os.fdopen(fd, "rb") as f:
        return f.read(), stat.S_IMODE(mode)


def _read_live(path: Path) -> bytes | None:
    try:
        return _read_state(path)[0]
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise storage_error(exc, f"cannot read {path}") from None


def _is_valid(file_name: str, data: bytes) -> bool:
    try:
        validate_content(file_name, data)
    except InvalidStateError:
        return False
    return True


def _file_mode(path: Path) -> int:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o600


def _backup_mode(store: Any, backup: BackupName) -> int | None:
    if isinstance(store, LocalStore):
        try:
            return stat.S_IMODE(os.lstat(store.root / backup.name).st_mode)
        except OSError:
            return None
    return None


def _local_path(store: Any, name: str) -> Path | None:
    return store.root / name if isinstance(store, LocalStore) else None


def _mirror_id(folder: Path) -> str:
    return "mirror-" + sha256_hex(os.fsencode(os.path.abspath(folder)))[:12]


def _remove_backup(store: LocalStore, name: str) -> None:
    store.remove(name + SIDECAR_SUFFIX)
    store.remove(name)


def _summary(tried: list[tuple[str, str]]) -> str:
    if not tried:
        return "nothing to try"
    return "; ".join(f"{what}: {why}" for what, why in tried[:10]) + (
        f"; and {len(tried) - 10} more" if len(tried) > 10 else "")


