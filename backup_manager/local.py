"""The local store: a folder of backups and sidecars (backups/, or a mirror folder)."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .atomic import fsync_dir, publish_new, unlink_quietly, write_temp
from .errors import IntegrityError, UploadConflict, unreachable
from .formats import SIDECAR_SUFFIX, format_backup_name, sha256_hex, sidecar_text
from .store import MAX_STATE_BYTES, Store, too_large

# O_NONBLOCK: a FIFO planted at a backup's name must not hang whoever lists it.
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_MAX_NAME_CLASHES = 1000


class LocalStore(Store):
    """A folder of backups. Symlinks and sub-folders in it are never objects."""

    def __init__(self, root: str | Path, *, durable: bool = True,
                 max_bytes: int = MAX_STATE_BYTES):
        self.root = Path(root)
        self.durable = durable
        self.max_bytes = max_bytes

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    @property
    def label(self) -> str:
        return str(self.root)

    def ensure(self) -> None:
        """Create the folder (0700) if missing, durably: its own name is fsync'd too."""
        if self.root.is_dir():
            return
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.durable:
            fsync_dir(self.root.parent)

    def prepare(self) -> None:
        """Create a missing folder, but only inside a parent that exists: a parent
        that is gone means a drive that is not mounted, not a folder to make."""
        if self.root.is_dir():
            return
        try:
            self._check_absent()
            self.root.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise unreachable(exc, f"cannot make {self.root}") from None

    def path(self, name: str) -> Path:
        return self.root / name

    def scan(self) -> tuple[list[str], list[str]]:
        files, others = [], []
        try:
            try:
                with os.scandir(self.root) as entries:
                    for entry in entries:
                        (files if entry.is_file(follow_symlinks=False) else others).append(
                            entry.name)
            except FileNotFoundError:
                self._check_absent()
        except OSError as exc:
            raise unreachable(exc, f"cannot list {self.root}") from None
        return files, others

    def list_names(self, prefix: str = "") -> list[str]:
        # Regular files only, from the folder's own entry types (no stat per name): a
        # symlink or folder named like a backup is no backup, and must not take a
        # keep_last place, stand for the newest, or be counted by status.
        try:
            try:
                with os.scandir(self.root) as entries:
                    return [e.name for e in entries if e.name.startswith(prefix)
                            and e.is_file(follow_symlinks=False)]
            except FileNotFoundError:
                self._check_absent()
                return []
        except OSError as exc:
            raise unreachable(exc, f"cannot list {self.root}") from None

    def _check_absent(self) -> None:
        # A folder never made is empty; one whose parent is gone is a drive not mounted.
        if not self.root.parent.is_dir():
            raise FileNotFoundError(errno.ENOENT, "the folder's parent is missing "
                                    "(not mounted?)", str(self.root.parent))

    def read(self, name: str, *, max_bytes: int | None = None) -> bytes | None:
        try:
            fd = os.open(self.root / name, _READ)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return None  # a symlink is never a backup
            raise unreachable(exc, f"cannot read {name} in {self.root}") from None
        try:
            info = os.fstat(fd)
            bounded = max_bytes is not None and max_bytes < self.max_bytes
            if not stat.S_ISREG(info.st_mode) or (info.st_size > self.max_bytes
                                                   and not bounded):
                os.close(fd)
                if stat.S_ISREG(info.st_mode):
                    raise too_large(self, name, info.st_size)
                return None
            with os.fdopen(fd, "rb") as f:
                limit = self.max_bytes if max_bytes is None else min(max_bytes, self.max_bytes)
                # By the size fstat says: read(n) allocates n bytes before reading any.
                want = min(limit, info.st_size) + 1
                data = f.read(want)
                if len(data) == want <= limit:  # it grew since fstat: the rest, bounded
                    data += f.read(limit + 1 - want)
        except OSError as exc:
            raise unreachable(exc, f"cannot read {name} in {self.root}") from None
        if len(data) > self.max_bytes:  # it grew while read
            raise too_large(self, name, len(data))
        return data

    def write(self, name: str, data: bytes, *, mode: int = 0o600) -> None:
        try:
            existing = self.read(name)
        except IntegrityError as exc:  # an object too large to read is other bytes
            raise UploadConflict(f"{self.root / name} exists with other content "
                                 f"({exc}); not overwritten") from None
        if existing is not None:
            if existing == data:
                return
            raise UploadConflict(f"{self.root / name} exists with other content; not overwritten")
        try:
            tmp = write_temp(self.root, name, data, mode=mode, durable=self.durable)
            try:
                publish_new(tmp, os.fspath(self.root / name))
            except FileExistsError:
                os.unlink(tmp)
                if self.read(name) == data:
                    return  # another writer put the same bytes there: done
                raise UploadConflict(f"{self.root / name} appeared while writing; not "
                                     "overwritten") from None
            if self.durable:
                fsync_dir(self.root)
        except UploadConflict:
            raise
        except OSError as exc:
            raise unreachable(exc, f"cannot write {name} in {self.root}") from None

    def create_backup(self, stem: str, suffix: str, data: bytes, mode: int,
                      when: datetime, before_commit: Callable[[str], None] | None = None,
                      *, sync_folder: bool = True) -> str:
        """Write a new backup and then its sidecar (the commit marker); return its name.

        The name is taken exclusively: on a clash with any other writer, thread or
        process, it moves to the next free microsecond. `before_commit(name)` runs
        once the name is taken and before the sidecar makes the backup complete.
        With sync_folder=False the caller syncs the folder (after the restore point
        that names this backup, so one folder sync makes both names durable).
        """
        first = format_backup_name(stem, suffix, when)
        tmp = write_temp(self.root, first, data, mode=mode, durable=self.durable)
        try:
            name = self._publish_unique(tmp, stem, suffix, when)
        except BaseException:
            unlink_quietly(tmp)
            raise
        self._commit(name, data, mode, before_commit, sync_folder)
        return name

    def create_object(self, name: str, data: bytes,
                      before_commit: Callable[[str], None] | None = None) -> None:
        """Write a new object under exactly `name`, then its sidecar; FileExistsError
        when the name is taken (by any writer: the create is exclusive)."""
        tmp = write_temp(self.root, name, data, durable=self.durable)
        try:
            publish_new(tmp, os.fspath(self.root / name))
        except BaseException:
            unlink_quietly(tmp)
            raise
        self._commit(name, data, 0o600, before_commit, True)

    def sync(self) -> None:
        """Make every name written so far durable (the folder sync), when durable."""
        if self.durable:
            fsync_dir(self.root)

    def _commit(self, name: str, data: bytes, mode: int,
                before_commit: Callable[[str], None] | None, sync_folder: bool) -> None:
        # Sidecar last: a crash before this line leaves an incomplete object, never a
        # sidecar vouching for bytes that are not on disk.
        sidecar = name + SIDECAR_SUFFIX
        try:
            if before_commit is not None:
                before_commit(name)
            side_tmp = write_temp(self.root, sidecar, sidecar_text(sha256_hex(data), name),
                                  mode=mode, durable=self.durable)
            try:
                os.replace(side_tmp, self.root / sidecar)
            except BaseException:
                unlink_quietly(side_tmp)
                raise
            if self.durable and sync_folder:
                fsync_dir(self.root)
        except BaseException:
            # An object that may not survive a power cut is no object: the caller is told
            # it failed, so it must not be there. Sidecar first, as in prune.
            unlink_quietly(os.fspath(self.root / sidecar))
            unlink_quietly(os.fspath(self.root / name))
            raise

    def _publish_unique(self, tmp: str, stem: str, suffix: str, when: datetime) -> str:
        for step in range(_MAX_NAME_CLASHES):
            name = format_backup_name(stem, suffix, when + timedelta(microseconds=step))
            try:
                publish_new(tmp, os.fspath(self.root / name))
                return name
            except FileExistsError:
                continue
        raise FileExistsError(errno.EEXIST, "no free backup name", os.fspath(self.root))

    def remove(self, name: str) -> None:
        """Delete one object; idempotent."""
        unlink_quietly(os.fspath(self.root / name))

    def is_object(self, name: str) -> bool:
        """A regular file is there (not a folder, not a symlink)."""
        try:
            return stat.S_ISREG(os.lstat(self.root / name).st_mode)
        except OSError:
            return False

    def mtime(self, name: str) -> float | None:
        try:
            return os.lstat(self.root / name).st_mtime
        except FileNotFoundError:
            return None

    def written_at(self, name: str) -> datetime | None:
        mtime = self.mtime(name)
        return None if mtime is None else datetime.fromtimestamp(mtime, UTC)

    def size(self, name: str) -> int | None:
        try:
            return os.lstat(self.root / name).st_size
        except FileNotFoundError:
            return None

