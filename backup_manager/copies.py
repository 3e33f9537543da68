"""Copies of local backups to mirror folders and S3, through the outbox.

A copy is recorded in the outbox before its backup is complete (`record`, from
LocalStore.create_backup's before_commit) and forgotten only once done, so a
kill at any instant leaves the work owed. Copies run outside the backups
folder lock: a slow endpoint never blocks a local backup. After one failure a
target is not asked again in this run, so a dead endpoint costs one timeout,
not one per state file. A backup that cannot be read is marked and skipped,
never a reason to stop the other copies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from . import log
from .errors import BackupError, IntegrityError, StoreUnreachable, UploadConflict
from .formats import SIDECAR_SUFFIX
from .outbox import Outbox, PendingCopy
from .retention import GRACE_PERIOD
from .store import fetch_verified

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    from .local import LocalStore
    from .store import Store

CLOUD_TARGET = "s3"
"""The target id of the S3 bucket; mirrors are `mirror-{hash of the folder}`."""


class SyncResult:
    """What one pass over the outbox did: copies made, copies still owed, errors."""

    def __init__(self) -> None:
        self.copied = 0
        self.pending = 0
        self.errors: list[str] = []


class Copier:
    """Sends complete backups from `store` to every target (target id -> Store)."""

    def __init__(self, store: LocalStore, outbox: Outbox, targets: dict[str, Store]):
        self.store = store
        self.outbox = outbox
        self.targets = targets
        self.unreachable: dict[str, str] = {}
        self._claimed = False

    def claim(self) -> None:
        """Make each target's queue in the outbox that of the store configured now (once
        per Copier): what another store was owed, and its history, is not this one's."""
        if not self._claimed:
            for target_id, target in self.targets.items():
                self.outbox.claim(target_id, target_identity(target))
            self._claimed = True

    def note_unreachable(self, target_id: str, exc: Exception) -> None:
        self.unreachable.setdefault(target_id, str(exc))

    def record(self, name: str, skip: Iterable[str] = ()) -> None:
        """Record that every target (but those in `skip`, which already hold it) needs
        object `name` (before it is complete: an OSError here fails that backup rather
        than leave a copy unowed)."""
        self.claim()
        for target_id in self.targets:
            if target_id not in skip:
                self.outbox.add(target_id, name)

    def send_owed(self) -> SyncResult:
        """Send what is owed, oldest first. Never raises: what fails stays owed."""
        try:
            return self.drain()
        except (OSError, BackupError) as exc:
            log.error("copies to mirrors and S3 stopped: %s; they stay queued", exc)
            result = SyncResult()
            result.errors.append(str(exc))
            return result

    def drain(self, progress: Callable[[int, int], None] | None = None) -> SyncResult:
        result = SyncResult()
        self.claim()
        work = [c for c in self.outbox.pending() if not c.conflict]
        for copy in work:
            target = self.targets.get(copy.target)
            if target is not None and copy.target not in self.unreachable and \
                    self._copy_one(copy, target, result):
                result.copied += 1
            else:
                result.pending += 1
            if progress:
                progress(result.copied + result.pending, len(work))
        return result

    def sync(self, complete: Iterable[str],
             progress: Callable[[int, int], None] | None = None) -> SyncResult:
        """Queue each of the `complete` backups a target lacks, then send everything owed.
        Targets are asked afresh: an explicit sync is the retry."""
        complete = list(complete)
        self.unreachable.clear()
        self.claim()
        for target_id, target in self.targets.items():
            try:
                present = set(target.list_names(""))
            except StoreUnreachable as exc:
                self.note_unreachable(target_id, exc)
                log.error("cannot list %s: %s", target.label, exc)
                continue
            for name in complete:
                if name not in present or name + SIDECAR_SUFFIX not in present:
                    self.outbox.add(target_id, name)
        result = self.drain(progress)
        result.errors += [f"{t}: {error}" for t, error in self.unreachable.items()]
        return result

    def _copy_one(self, copy: PendingCopy, target: Store, result: SyncResult) -> bool:
        try:
            data = fetch_verified(self.store, copy.name)
        except IntegrityError as exc:
            if exc.kind in ("missing backup", "missing sidecar") and _recent(copy):
                return False  # its backup is still being written (or never was): wait
            if exc.kind == "missing backup":
                log.info("%s never appeared or is gone from %s; dropping its copy to %s",
                         copy.name, self.store.label, target.label)
                self.outbox.done(copy.target, copy.name)
                return True
            return self._failed(copy, target, f"local backup is damaged: {exc}", result)
        except OSError as exc:
            return self._failed(copy, target, f"cannot read the local backup: {exc}", result)
        try:
            target.prepare()
            target.write(copy.name, data)
            # Sidecar last, as locally: a remote backup without one is incomplete.
            target.write(copy.name + SIDECAR_SUFFIX,
                         self.store.read(copy.name + SIDECAR_SUFFIX) or b"")
        except UploadConflict as exc:
            return self._failed(copy, target, str(exc), result, conflict=True)
        except StoreUnreachable as exc:
            self.note_unreachable(copy.target, exc)
            return self._failed(copy, target, str(exc), result)
        self.outbox.done(copy.target, copy.name)
        log.info("copied %s to %s", copy.name, target.label)
        return True

    def _failed(self, copy: PendingCopy, target: Store, error: str, result: SyncResult,
                conflict: bool = False) -> bool:
        log.error("copy of %s to %s failed%s: %s", copy.name, target.label,
                  " (conflict, not retried)" if conflict else "; queued for retry", error)
        result.errors.append(f"{target.label}/{copy.name}: {error}")
        try:
            self.outbox.failed(copy, error, conflict=conflict)
        except OSError as exc:
            log.error("cannot update the outbox entry of %s: %s", copy.name, exc)
        return False


def target_identity(target: Store) -> str:
    """What a copy target is: where it is (a folder, or bucket and prefix) and the
    endpoint that serves it. A target whose identity changed is another target."""
    endpoint = getattr(target, "endpoint_url", None)
    return target.label + (f" at {endpoint}" if endpoint else "")


def _recent(copy: PendingCopy) -> bool:
    return datetime.now(UTC) - copy.queued_at < GRACE_PERIOD
