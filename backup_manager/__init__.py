"""State backup and disaster recovery for DalioLite.

    from backup_manager import BackupManager
    bm = BackupManager()
    bm.backup_state_file("state/last_rebalance.json")
    bm.restore_from_backup("state/last_rebalance.json")

Standard library only at import time; boto3 is imported when cloud backup is
first used. Modules, in reading order (each uses only those before it):
errors, log, formats, content, atomic, writer, retention, store, local, objectlock,
s3, keys, envelope, seal, catalog, points, history, outbox, copies, folder, commit,
restore, install, pruning, verify, status, problems, config, backing, claiming,
restoring, upkeep, manager, site, refusal, rules, planning, recovery, intents, drill,
metrics, console, key_check, commands, restore_command, status_command, key_command,
cli.

    errors     every error raised on purpose, one base class
    log        the package's logger (logging is imported only when it can show)
    formats    backup names and stamps, sidecars
    content    content rules of state files, and the moment a file's content records
    atomic     temp file, sync (F_FULLFSYNC on macOS), rename, sync the folder; locks
    writer     this machine's writer id (backups/.writer), made once
    retention  the pure policy: (name, time) records -> keep/remove and why
    store      the Store contract every place holding backups offers; a verified read
    local, s3  the two stores: a folder, an S3 bucket
    objectlock what backup.s3_object_lock asks of S3, and what a bucket's settings leave
               a leaked key able to do
    keys       key files: keys with ids, the newest signs, every one verifies (rotation)
    envelope   a signed copy's bytes: the MAC line of its sidecar, the encrypted envelope
    seal       signed (and encrypted) copies: a store whose reads return only what a key
               of this site wrote; refused objects are recorded for status
    catalog    which backups of which state file a store holds, newest first
    points     restore points: the manifest and its chain
    history    the points every store holds; forks; intents no point settles
    outbox     the durable queue of copies owed to mirrors and S3
    copies     sending what the outbox owes
    folder     backups/: its store, lock, outbox and corrupt/
    commit     commit a restore point of the state files as they stand
    restore    find what a point (or a named backup) holds, verified, in any store
    install    install it, atomically, keeping what it replaces
    pruning    the disk side of retention
    verify     check every backup a store holds
    status     the facts of an installation that status reports
    problems   what in those facts needs a person, and what fixes it
    config     the backup: section of config.yaml
    backing    BackupManager's backups and restore points
    claiming   BackupManager's claim before orders, and the check before each order
    restoring  BackupManager's restores: plan and verify, then install
    upkeep     BackupManager's listing, verify, prune, sync, and what is asked of copies
    manager    BackupManager, built from the configuration: the three jobs above in one
    site       one installation from its config.yaml: manager, state folder, run lock,
               the host's record, status, and every command a person is told to run
    refusal    why the host must not trade (Refusal), and what the host knows (HostFacts)
    rules      the recovery rules, each asked of a plan: writers, older state, account,
               the host's records, the clock
    planning   the start-up guard decides, changing nothing: install, catch up, or refuse
    recovery   the start-up guard: decide, then install, catch up, commit, queue copies
    intents    orders are placed once: an intent before orders, settled before deciding
    drill      rehearse recovery into a scratch folder, changing nothing live
    metrics    status facts in the Prometheus text format (status --format prometheus)
    console    what the command line prints, and which state file an argument means
    key_check  the key opens the newest point, and its backups, in every store
    commands   list, backup, verify, prune, drill: each command's arguments and body
    restore_command  restore (one file, or --all): its arguments and body
    status_command   status and sync: their arguments and bodies
    key_command      key init, rotate, check, decrypt: its arguments and body
    cli        python -m backup_manager: the table of commands and the way in
"""

from .atomic import atomic_write, file_lock, read_state_file
from .catalog import BackupInfo
from .content import (
    parse_iso_timestamp,
    register_content_time,
    register_validator,
    validate_content,
)
from .copies import SyncResult
from .errors import (
    BackupError,
    CloudError,
    CloudUnavailable,
    ConfigError,
    IntegrityError,
    IntentNotCommitted,
    InvalidStateError,
    KeyUnavailable,
    LockTimeout,
    MissingDependency,
    NoValidBackupError,
    StateUnrecoverableError,
    StorageError,
    StoreUnreachable,
    UnfencedClaim,
    UnfinishedClaim,
    UnseenStoresError,
    UploadConflict,
    WriterConflict,
)
from .formats import CLOCK_SKEW, StateKey, state_key
from .history import INTENT_LEASE, History
from .manager import BackupManager
from .points import Entry, Point, PointKind
from .restoring import PointPlan, RestorePlan
from .retention import Decision, RetentionPolicy, plan_cleanup, plan_retention
from .store import Store, fetch_verified
from .writer import writer_id

# Imported on first use (PEP 562): a cron `backup` run needs none of them.
_LAZY = {"RestoreResult": "restore", "VerifyItem": "verify", "VerifyReport": "verify",
         "status_problems": "problems", "RecoveryReport": "recovery", "recover": "recovery",
         "HostFacts": "refusal", "Refusal": "refusal", "RefusalKind": "refusal",
         "OrderFact": "intents", "claim_intent": "intents", "Settlement": "intents",
         "settle": "intents", "unrecorded": "intents", "Site": "site", "HOST_RECORD": "site",
         "RUN_LOCK": "site", "facts_view": "site", "age": "problems", "rehearse": "drill",
         "ProblemKind": "problems", "LIVE_BACKED_UP": "status", "LIVE_OLDER": "status",
         "LIVE_UNKNOWN": "status"}


def __getattr__(name: str):  # noqa: ANN202
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'backup_manager' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{module}"), name)


def main(argv=None):
    """The command line (python -m backup_manager, dalio-backup)."""
    from .cli import main as cli_main

    return cli_main(argv)


__all__ = [
    "BackupError", "BackupInfo", "BackupManager", "CLOCK_SKEW", "CloudError",
    "CloudUnavailable", "ConfigError", "Decision", "Entry", "HOST_RECORD", "History",
    "HostFacts", "INTENT_LEASE", "IntegrityError", "IntentNotCommitted", "InvalidStateError",
    "KeyUnavailable", "LIVE_BACKED_UP", "LIVE_OLDER", "LIVE_UNKNOWN", "LockTimeout",
    "MissingDependency", "NoValidBackupError", "OrderFact", "Point", "PointKind", "PointPlan",
    "ProblemKind", "RUN_LOCK", "RecoveryReport", "Refusal", "RefusalKind", "RestorePlan",
    "RestoreResult", "RetentionPolicy", "Settlement", "Site", "StateKey",
    "StateUnrecoverableError", "StorageError", "Store", "StoreUnreachable", "SyncResult",
    "UnfencedClaim", "UnfinishedClaim", "UnseenStoresError", "UploadConflict", "VerifyItem",
    "VerifyReport", "WriterConflict", "age", "atomic_write", "claim_intent", "facts_view",
    "fetch_verified", "file_lock", "main", "parse_iso_timestamp", "plan_cleanup",
    "plan_retention", "read_state_file", "recover", "register_content_time",
    "register_validator", "rehearse", "settle", "state_key", "status_problems", "unrecorded",
    "validate_content", "writer_id",
]
