"""Drill: rehearse disaster recovery into a temporary folder, changing nothing live.

`drill` restores each state file into a scratch folder, from backups/ and the
mirrors, or with cloud=True from S3 alone (as on a new machine), and says how
long each took. No file in backups/, a mirror, state/ or the outbox is
created or changed.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from .errors import BackupError, ConfigError
from .formats import state_key
from .manager import BackupManager


def rehearse(manager: BackupManager, state_files: Iterable[str | Path], *,
          cloud: bool = False) -> list[dict]:
    """One result per state file: ok, the backup and source chosen, seconds, error."""
    if cloud and manager.cloud is None:
        raise ConfigError("drill --cloud needs backup.cloud_enabled and backup.s3_bucket")
    with tempfile.TemporaryDirectory(prefix="dalio-drill-") as scratch:
        source = manager
        if cloud:
            # A new machine: no backups/ at all, only the bucket.
            source = BackupManager(Path(scratch) / "backups", durable=False)
            source.cloud = manager.cloud
        return [_rehearse(source, Path(path), Path(scratch), "cloud" if cloud else "local")
                for path in state_files]


def _rehearse(manager: BackupManager, path: Path, scratch: Path, source: str) -> dict:
    target = scratch / "state" / state_key(path).file_name
    start = time.perf_counter()
    try:
        plan = manager.plan_restore(target, source=source)
        result = manager.install_restore(plan, rehearsal=True)
        ok, error, name, where = True, None, result.name, result.location
    except BackupError as exc:
        ok, error, name, where = False, str(exc), None, None
    return {"state_file": str(path), "ok": ok, "backup": name, "source": where,
            "seconds": time.perf_counter() - start, "error": error}
