"""Atomic, durable file I/O and inter-process locks.

Every file is written under a temporary name in its final folder, flushed,
synced to the disk (fsync; F_FULLFSYNC where the system has it, as macOS does),
closed and only then renamed (or linked) into place; the folder is synced last
so the new name survives a power cut. A reader sees the old file or the new
one, never a torn one.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import LockTimeout
from .formats import TEMP_MARK

_CREATE_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK}

# On macOS fsync only hands the data to the drive, whose cache a power cut can lose or
# reorder (fsync(2)); F_FULLFSYNC empties that cache too. Network and FUSE mounts refuse it
# with one of these errnos (ENOTSUP and EOPNOTSUPP are one number on Linux, two on macOS;
# ENOTTY comes from macOS's exFAT driver), and fsync is then the most they offer. Some (FUSE,
# SMB) cannot fsync a folder at all: its new names are then as durable as that filesystem
# makes them, so the same errnos are no failure there, as in restic's fsyncDir (restic
# issues 2395 and 4016).
_CANNOT_SYNC = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOTTY})


def sync_to_disk(fd: int, *, folder: bool = False) -> None:
    """Put what was written through `fd` (a file's bytes, or a `folder`'s names) on the
    disk itself, as far as its filesystem can: every durable write ends here."""
    full_fsync = getattr(fcntl, "F_FULLFSYNC", None)
    try:
        if full_fsync is not None:
            try:
                fcntl.fcntl(fd, full_fsync)
                return
            except OSError as exc:
                if exc.errno not in _CANNOT_SYNC:
                    raise
        os.fsync(fd)
    except OSError as exc:
        if not (folder and exc.errno in _CANNOT_SYNC):
            raise


def fsync_dir(folder: str | Path) -> None:
    """Make the names in `folder` durable (see sync_to_disk)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        sync_to_disk(fd, folder=True)
    finally:
        os.close(fd)


def _token() -> str:
    return os.urandom(4).hex()


def temp_name(final_name: str) -> str:
    # Hidden, and never a backup name, so listings skip it; short enough for NAME_MAX.
    return f".{final_name[:200]}{TEMP_MARK}{_token()}"


def write_temp(folder: str | Path, final_name: str, data: bytes, *, mode: int = 0o600,
               durable: bool = True) -> str:
    """Write `data` to a new temp file in `folder` and return its path.

    O_EXCL|O_NOFOLLOW: a symlink planted at the temp name is never written through.
    """
    for attempt in range(5):
        tmp = os.path.join(folder, temp_name(final_name))
        try:
            fd = os.open(tmp, _CREATE_NEW, 0o600)
            break
        except FileExistsError:
            if attempt == 4:
                raise
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            sync_to_disk(fd)
    except BaseException:
        os.close(fd)
        unlink_quietly(tmp)
        raise
    try:
        # Close, then rename: close can still report a deferred write error (NFS).
        os.close(fd)
    except BaseException:
        unlink_quietly(tmp)
        raise
    return tmp


def atomic_write(path: str | Path, data: bytes, *, durable: bool = True,
                 mode: int | None = None) -> None:
    """Replace `path` with `data` atomically: readers see the old or the new bytes.

    With durable=True (the default) the data and the new name are on disk when
    this returns. `mode` defaults to the replaced file's mode, or 0o600.
    """
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    if mode is None:
        try:
            mode = os.stat(path).st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o600
    tmp = write_temp(folder, os.path.basename(path), data, mode=mode, durable=durable)
    try:
        os.replace(tmp, path)
    except BaseException:
        unlink_quietly(tmp)
        raise
    if durable:
        fsync_dir(folder)


def publish_new(tmp: str, final: str) -> None:
    """Give the finished temp file `tmp` the name `final`, which must not exist yet.

    A hard link is atomic and exclusive: FileExistsError when `final` exists (a
    file, a folder or a symlink alike). `tmp` is removed only on success.
    """
    try:
        os.link(tmp, final, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        # Some mounted folders (FUSE, SMB) refuse hard links: check, then rename.
        if os.path.lexists(final):
            raise FileExistsError(errno.EEXIST, "file exists", final) from None
        os.rename(tmp, final)
        return
    os.unlink(tmp)


def read_state_file(path: str | Path) -> tuple[bytes, int]:
    """(bytes, permission bits) of a state file; OSError (EINVAL) if it is no regular file."""
    # O_NONBLOCK: a FIFO planted at the state path must not hang the trading run.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", os.fspath(path))
    with os.fdopen(fd, "rb") as f:
        return f.read(), stat.S_IMODE(mode)


def file_mode(path: str | Path, *, follow_symlinks: bool = True,
              default: int | None = 0o600) -> int | None:
    """The permission bits of `path`; `default` when it cannot be looked at."""
    try:
        return stat.S_IMODE(os.stat(path, follow_symlinks=follow_symlinks).st_mode)
    except OSError:
        return default


def unlink_quietly(path: str) -> None:
    """Remove a file if it is there; a leftover is cleaned later, never an error."""
    try:
        os.unlink(path)
    except OSError:
        pass


@contextmanager
def file_lock(path: str | Path, timeout: float, what: str = "lock") -> Iterator[None]:
    """Hold an exclusive flock on `path` (created if missing), waiting at most `timeout` s.

    The lock belongs to the open file, so it is released when the process dies. A
    LockTimeout names the holder where the system says who it is (Linux).
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES):
            raise
        # A folder that cannot be written (a read-only mount, a folder of another user)
        # can still be read and restored from: flock needs an open file, not a writable
        # one, so an existing lock file is locked as it is.
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            raise exc from None
    try:
        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"{what} {os.fspath(path)} is held by {lock_holder(fd)}; waited "
                        f"{timeout:g} s. It is released when that process ends: run this "
                        f"again once it has finished"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        yield
    finally:
        os.close(fd)


def lock_holder(fd: int) -> str:
    """Who holds the lock open as `fd`: 'another process (PID 1234: its command
    line)', from the kernel's lock table (/proc/locks, Linux); elsewhere 'another
    process'. Nothing is written into the lock file: it stays empty."""
    pid = _pid_in_lock_table(fd)
    if pid is None:
        return "another process"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = " ".join(f.read(400).replace(b"\0", b" ").decode(errors="replace")
                               .split())
    except OSError:
        command = ""
    if len(command) > 120:
        command = command[:117] + "..."
    return f"another process (PID {pid}" + (f": {command}" if command else "") + ")"


def _pid_in_lock_table(fd: int) -> int | None:
    st = os.fstat(fd)
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            for line in f:
                fields = line.split()
                # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; waiters show "->".
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == device:
                    return int(fields[4])
    except (OSError, ValueError):
        pass
    return None
