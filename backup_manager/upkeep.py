"""What BackupManager does to keep backups well: list, verify, prune and sync them, and
what the command line and the Backups page ask about copies and status."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from . import log
from .catalog import BackupInfo, backups_of, group_backups, state_files_in
from .copies import CLOUD_TARGET, SyncResult
from .errors import BackupError, ConfigError
from .formats import state_key
from .points import point_name, points_in
from .pruning import prune_backups
from .retention import Decision
from .store import fetch_verified

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    from typing import Any

    from .formats import BackupName, StateKey
    from .outbox import PendingCopy
    from .store import Store
    from .verify import VerifyReport



class Upkeep:
    """BackupManager's listing, checking, pruning and copies, on the parts
    BackupManager.__init__ sets up (backup_dir, folder, store, outbox, mirrors, cloud,
    copier, policy, state_files)."""

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
        from .verify import verify_bucket, verify_stores, verify_uploaded
        report = verify_stores(self.folder, stores, keys)
        if cloud:
            verify_uploaded(self.folder, self.cloud, CLOUD_TARGET, keys, report)
            verify_bucket(self.cloud, report)
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

    def send_owed(self) -> SyncResult:
        """Send the copies the outbox owes, without listing the targets first (a host
        about to stop). Never raises: what fails stays owed. A target that failed once
        for this manager is not asked again, so a dead endpoint costs one timeout."""
        return self.copier.send_owed()

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
