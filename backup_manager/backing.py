"""What BackupManager does to make backups: back up a state file, commit restore points
(one per change, or one for a whole run's changes), and the prune that follows each
backup."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from . import log
from .atomic import read_state_file
from .catalog import BackupSet, group_backups, next_stamp
from .content import validate_content
from .errors import (
    BackupError,
    InvalidStateError,
    StateUnrecoverableError,
    storage_error,
)
from .formats import SIDECAR_SUFFIX, sha256_hex, state_key
from .points import PointKind
from .pruning import prune_backups

TYPE_CHECKING = False  # typing costs start-up time; only type checkers need it
if TYPE_CHECKING:
    from typing import Any

    from .formats import StateKey
    from .points import Point



class Backing:
    """BackupManager's backups and restore points, on the parts BackupManager.__init__ sets up
    (backup_dir, folder, store, outbox, mirrors, cloud, copier, policy, state_files)."""

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

    @contextmanager
    def changes(self, kind: str = "run", reason: str = "",
                details: Mapping[str, Any] | None = None,
                commit_failed: Callable[[Exception], None] | None = None
                ) -> Iterator[dict[str, str]]:
        """Group the backups made inside into one restore point, committed at the end
        (also when the block raises: what was saved is the state now; not when it
        raises a refusal, a StateUnrecoverableError, which leaves no point). A commit that
        fails raises, or is handed to `commit_failed` (a host whose state is saved
        records it and goes on, promise 6); under a block that raised it is logged.
        Yields {"reason": reason}: the block may change why the point is made."""
        self._batch.append({})
        failed, refused = True, False
        note = {"reason": reason}
        try:
            yield note
            failed = False
        except StateUnrecoverableError:
            # A refusal (another writer's claim above all) changes nothing but its record:
            # a point committed now would take a number the history has given elsewhere.
            refused = True
            raise
        finally:
            made = self._batch.pop()
            if not self._batch and not refused:
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
