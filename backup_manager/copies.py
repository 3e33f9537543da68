"""Copies of local backups to mirror folders and S3, through the outbox.

A copy is recorded in the outbox before it is tried and forgotten only once
done, so a kill at any instant leaves the work owed. Copies run outside the
backups folder lock: a slow endpoint never blocks a local backup. After one
failure a target is not asked again in this run, so a dead endpoint costs one
timeout, not one per state file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from . import log
from .errors import CloudError, IntegrityError, UploadConflict
from .formats import SIDECAR_SUFFIX, fetch_verified
from .outbox import Outbox, PendingCopy

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

    def note_unreachable(self, target_id: str, exc: Exception) -> None:
        self.unreachable.setdefault(target_id, str(exc))

    def owe(self, name: str) -> None:
        """Record that every target needs backup `name`, then send what is owed, oldest
        first. Never raises: a failure stays in the outbox and is logged."""
        for target_id in self.targets:
            try:
                self.outbox.add(target_id, name)
            except OSError as exc:
                log.error("cannot record %s in the outbox for %s: %s", name, target_id, exc)
        self.drain()

    def drain(self, progress: Callable[[int, int], None] | None = None) -> SyncResult:
        result = SyncResult()
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
        for target_id, target in self.targets.items():
            try:
                present = set(target.list_names(""))
            except (CloudError, OSError) as exc:
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
            if self.store.read(copy.name) is None:
                log.warning("%s is gone from %s; dropping its copy to %s", copy.name,
                            self.store.label, target.label)
                self.outbox.done(copy.target, copy.name)
                return True
            return self._failed(copy, target, f"local backup is damaged: {exc}", result)
        try:
            target.prepare()
            target.write(copy.name, data)
            # Sidecar last, as locally: a remote backup without one is incomplete.
            target.write(copy.name + SIDECAR_SUFFIX,
                         self.store.read(copy.name + SIDECAR_SUFFIX) or b"")
        except UploadConflict as exc:
            return self._failed(copy, target, str(exc), result, conflict=True)
        except (CloudError, OSError) as exc:
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
