"""The obvious implementation, for comparison: the original specification's approach.

Copy with shutil.copy2, hash the copy, write the sidecar, glob the folder and
stat every backup to prune by mtime; restore by globbing, sorting, verifying the
newest and copying it over the live file. No fsync, no lock, no validation.
"""

from __future__ import annotations

import hashlib
import shutil
from datetime import datetime, timedelta
from itertools import count
from pathlib import Path

_seq = count()


def _checksum(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(4096), b""):
            sha.update(chunk)
    return sha.hexdigest()


def naive_backup(state: Path, backup_dir: Path, retention_days: int = 30) -> Path:
    # A sequence number keeps same-second names apart, so the baseline does the same work.
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S") + f"-{next(_seq)}"
    target = backup_dir / f"{state.stem}_{stamp}{state.suffix}"
    shutil.copy2(state, target)
    (backup_dir / (target.name + ".sha256")).write_text(f"{_checksum(target)}  {target.name}\n")
    cutoff = (datetime.now() - timedelta(days=retention_days)).timestamp()
    for old in backup_dir.glob(f"{state.stem}_*{state.suffix}"):
        if old.stat().st_mtime < cutoff:
            old.unlink()
    return target


def naive_restore(state: Path, backup_dir: Path) -> bool:
    for candidate in sorted(backup_dir.glob(f"{state.stem}_*{state.suffix}"), reverse=True):
        sidecar = backup_dir / (candidate.name + ".sha256")
        if not sidecar.exists():
            continue
        if sidecar.read_text().split()[0] != _checksum(candidate):
            continue
        shutil.copy2(candidate, state)
        return True
    return False
