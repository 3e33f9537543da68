"""State backup and disaster recovery for DalioLite.

    from backup_manager import BackupManager
    bm = BackupManager()
    bm.backup_state_file("state/last_rebalance.json")
    bm.restore_from_backup("state/last_rebalance.json")

Standard library only at import time; boto3 is imported when cloud backup is
first used. Modules, in reading order: errors, formats, atomic, retention,
local, s3, outbox, copies, config, manager, cli.
"""

from .atomic import atomic_write, file_lock
from .copies import SyncResult
from .errors import (
    BackupError,
    CloudError,
    CloudUnavailable,
    ConfigError,
    IntegrityError,
    InvalidStateError,
    LockTimeout,
    MissingDependency,
    NoValidBackupError,
    StorageError,
    UploadConflict,
)
from .formats import fetch_verified, parse_iso_timestamp, register_validator, validate_content
from .manager import (
    BackupInfo,
    BackupManager,
    RestoreResult,
    VerifyItem,
    VerifyReport,
)
from .retention import Decision, RetentionPolicy, plan_cleanup, plan_retention


def main(argv=None):
    """The command line (python -m backup_manager, dalio-backup)."""
    from .cli import main as cli_main

    return cli_main(argv)


__all__ = [
    "BackupError", "BackupInfo", "BackupManager", "CloudError", "CloudUnavailable",
    "ConfigError", "Decision", "IntegrityError", "InvalidStateError", "LockTimeout",
    "MissingDependency", "NoValidBackupError", "RestoreResult", "RetentionPolicy",
    "StorageError", "SyncResult", "UploadConflict", "VerifyItem", "VerifyReport",
    "atomic_write", "fetch_verified", "file_lock", "main", "parse_iso_timestamp",
    "plan_cleanup", "plan_retention", "register_validator", "validate_content",
]
