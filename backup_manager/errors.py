"""Every error the package raises on purpose: one base class, a flat hierarchy."""

from __future__ import annotations


class BackupError(Exception):
    """Base class of every error raised on purpose by backup_manager."""


class ConfigError(BackupError, ValueError):
    """A configuration key is unknown or has a bad value; the message names the key."""


class KeyUnavailable(ConfigError):
    """The key that signs copies in mirrors and S3 cannot be had: its key file is missing,
    unreadable or damaged, or its environment variable is not set. Names the source."""


class InvalidStateError(BackupError, ValueError):
    """State content failed validation; nothing was written."""


class IntegrityError(BackupError):
    """A backup does not match its sidecar, or its sidecar is missing or malformed.

    `kind` says which ('missing backup', 'missing sidecar', 'malformed sidecar',
    'checksum mismatch'); `detail` says where.
    """

    def __init__(self, kind: str, detail: str):
        super().__init__(kind, detail)
        self.kind, self.detail = kind, detail

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


class NoValidBackupError(BackupError):
    """No complete, verified, valid backup exists; `tried` lists each candidate and why.

    `found` counts backups that exist but failed; `unreachable` maps each store that
    could not be listed or read (folder, mirror, S3) to why: both are evidence that
    the state once existed.
    """

    def __init__(self, message: str, tried: list[tuple[str, str]] | None = None,
                 found: int = 0, unreachable: dict[str, str] | None = None):
        super().__init__(message)
        self.tried = list(tried or [])
        self.found = found
        self.unreachable = dict(unreachable or {})


class UnseenStoresError(NoValidBackupError):
    """Nothing was installed: a store that may hold newer state could not be seen.
    Installing from the stores that answer is an explicit choice (from_reachable)."""


class StateUnrecoverableError(BackupError):
    """State once existed but no valid copy can be found: the host must not trade."""


class WriterConflict(StateUnrecoverableError):
    """Another writer holds the restore point number this one claimed: the history moved
    on elsewhere, and nothing that needed the claim (orders) may go ahead."""


class UnfencedClaim(WriterConflict):
    """A claim made with backup.require_fence while a copy target could not be asked:
    a newer writer there would go unseen, so nothing that needed the claim goes ahead."""


class UnfinishedClaim(WriterConflict):
    """The claimed number was taken by an unfinished claim (a run killed between its
    point and its sidecar, before any order), now finished: the next run settles it."""


class IntentNotCommitted(StateUnrecoverableError):
    """The intent before orders could not be committed (backups/ cannot be written): no
    order may be placed, or a run stopped between its orders and its record would be
    placed again."""


class LockTimeout(BackupError, TimeoutError):
    """Another process held the backups folder lock for longer than lock_timeout."""


class StorageError(BackupError, OSError):
    """The disk refused: full, permission denied, not a folder, read-only."""


class StoreUnreachable(BackupError, OSError):
    """A store (backups/, a mirror, a bucket) could not answer: it could not be listed,
    or an object in it could not be read or written. Never "nothing there": what it
    holds is unknown, and may be newer than what the others hold. `errno` is the
    system's error number where there is one."""


class CloudError(StoreUnreachable):
    """The object store refused a request; not worth retrying as it stands."""


class CloudUnavailable(CloudError):
    """The object store could not be reached or was overloaded; worth retrying later."""


class UploadConflict(BackupError):
    """An object with that name exists and holds other bytes; it is never overwritten."""


class MissingDependency(BackupError, ImportError):
    """An optional dependency is not installed; the message says what to install."""


def unreachable(exc: OSError, doing: str) -> StoreUnreachable:
    """A store's OSError as StoreUnreachable, keeping errno and filename."""
    if isinstance(exc, StoreUnreachable):
        return exc
    err = StoreUnreachable(exc.errno, f"{doing}: {exc.strerror or exc}", exc.filename)
    err.__cause__ = exc
    return err


def storage_error(exc: OSError, doing: str) -> StorageError:
    """Wrap an OSError so callers can catch BackupError, keeping errno and filename."""
    reason = exc.strerror or str(exc)
    err = StorageError(exc.errno, f"{doing}: {reason}", exc.filename)
    err.__cause__ = exc
    return err
