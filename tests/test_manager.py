"""BackupManager itself: backup_state_file (names, modes, refusals), the lock, the
constructor, from_config, and what importing the package costs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backup_manager import (
    BackupManager,
    InvalidStateError,
    LockTimeout,
    StorageError,
    file_lock,
)
from backup_manager.formats import format_backup_name
from tests.helpers import ROOT, backups_of, rebalance_doc


def test_backup_writes_backup_and_sidecar(state_file):
    bm = BackupManager()
    path = bm.backup_state_file(state_file)
    assert path.read_bytes() == state_file.read_bytes()
    sidecar = path.with_name(path.name + ".sha256")
    assert sidecar.exists()
    check = subprocess.run(["sha256sum", "-c", sidecar.name], cwd=path.parent,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert (path.parent.stat().st_mode & 0o777) == 0o700


def test_backup_keeps_state_file_mode(state_file):
    state_file.chmod(0o640)
    path = BackupManager().backup_state_file(state_file)
    assert path.stat().st_mode & 0o777 == 0o640


def test_missing_state_file_returns_none_and_writes_nothing(project):
    bm = BackupManager()
    assert bm.backup_state_file("state/last_rebalance.json") is None
    assert not (project / "backups").exists()


def test_200_backups_in_a_tight_loop_are_distinct_and_verify(state_file, project):
    bm = BackupManager(keep_last=500)
    made = []
    for i in range(200):
        state_file.write_bytes(rebalance_doc(n=i))
        made.append(bm.backup_state_file(state_file).name)
    assert len(set(made)) == 200
    assert backups_of(project / "backups") == sorted(made)
    sidecars = sorted(p.name for p in (project / "backups").glob("*.sha256"))
    check = subprocess.run(["sha256sum", "-c", *sidecars], cwd=project / "backups",
                           capture_output=True, text=True)
    assert check.returncode == 0
    assert check.stdout.count(".json: OK") == 400, "200 backups and their 200 restore points"
    assert check.stdout.count("point-") == 200


def test_same_instant_clock_moves_to_next_microsecond(state_file, project):
    fixed = datetime(2026, 2, 17, 10, 30, tzinfo=UTC)
    bm = BackupManager(keep_last=50, clock=lambda: fixed)
    names = [bm.backup_state_file(state_file).name for _ in range(3)]
    assert names == [format_backup_name("last_rebalance", ".json",
                                        fixed + timedelta(microseconds=i)) for i in range(3)]


@pytest.mark.parametrize("content", [b'{"timestamp": "2026-02-1', b"", b"\x00\x00", b"[1]",
                                     b'{"cash": 1}'])
def test_invalid_json_is_refused_at_backup(state_file, project, content):
    state_file.write_bytes(content)
    with pytest.raises(InvalidStateError):
        BackupManager().backup_state_file(state_file)
    assert not (project / "backups").exists() or backups_of(project / "backups") == []


def test_dangling_symlink_in_backups_does_not_break_backup(state_file, project):
    (project / "backups").mkdir()
    (project / "backups" / "last_rebalance_2026-01-01_00-00-00.000000Z.json").symlink_to(
        project / "gone")
    (project / "backups" / "junk").symlink_to(project / "gone")
    bm = BackupManager()
    assert bm.backup_state_file(state_file) is not None
    assert bm.verify().problems[0].status == "not a regular file"


def test_symlink_at_next_backup_name_is_not_written_through(state_file, project):
    fixed = datetime(2026, 2, 17, 10, 30, tzinfo=UTC)
    (project / "backups").mkdir(mode=0o700)
    victim = project / "victim.txt"
    victim.write_bytes(b"precious")
    taken = format_backup_name("last_rebalance", ".json", fixed)
    (project / "backups" / taken).symlink_to(victim)
    path = BackupManager(clock=lambda: fixed).backup_state_file(state_file)
    assert path.name == format_backup_name("last_rebalance", ".json",
                                           fixed + timedelta(microseconds=1))
    assert victim.read_bytes() == b"precious"


def test_unusable_backups_folder_fails_at_backup_time_only(state_file, project):
    (project / "backups").write_text("a file, not a folder")
    bm = BackupManager()
    with pytest.raises(StorageError, match="backups"):
        bm.backup_state_file(state_file)


def test_from_config_resolves_against_config_folder(tmp_path, monkeypatch):
    cfg = tmp_path / "conf" / "config.yaml"
    cfg.parent.mkdir()
    cfg.write_text("backup:\n  dir: my-backups\n  keep_last: 3\n"
                   "  state_files: [state/last_rebalance.json]\n")
    monkeypatch.chdir(tmp_path)
    bm = BackupManager.from_config(cfg)
    assert bm.backup_dir == cfg.parent / "my-backups"
    assert bm.state_files == [cfg.parent / "state" / "last_rebalance.json"]
    assert bm.policy.keep_last == 3


def test_import_loads_no_boto3_yaml_or_logging():
    code = ("import sys, backup_manager.cli; "
            "print(*(m in sys.modules for m in ('boto3', 'yaml', 'logging', 'dataclasses')))")
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out.split() == ["False"] * 4, "cron pays for every import at start-up"


def test_a_held_lock_times_out_naming_the_backups_folder(state_file, project):
    bm = BackupManager("my-backups", lock_timeout=0.3)
    bm.backup_state_file(state_file)
    folder = project / "my-backups"
    before = sorted(os.listdir(folder))
    changed = rebalance_doc(n="changed")
    state_file.write_bytes(changed)  # so a restore would replace it
    with file_lock(folder / ".lock", 5):  # another process, as flock sees it
        for call in (lambda: bm.backup_state_file(state_file), lambda: bm.restore(state_file),
                     lambda: bm.prune()):
            start = time.monotonic()
            with pytest.raises(LockTimeout, match=re.escape("my-backups/.lock")):
                call()
            assert time.monotonic() - start < 3, "the wait is bounded by lock_timeout"
    assert sorted(os.listdir(folder)) == before, "nothing was written without the lock"
    assert state_file.read_bytes() == changed
    assert bm.backup_state_file(state_file) is not None, "released: backups go on"


def test_the_specifications_four_positional_arguments_and_no_more(project):
    bm = BackupManager("my-backups", 7, True, "my-bucket")
    assert (bm.backup_dir, bm.retention_days, bm.cloud_enabled, bm.s3_bucket) == (
        Path("my-backups"), 7, True, "my-bucket")
    assert bm.policy.retention_days == 7 and bm.cloud.bucket == "my-bucket"
    with pytest.raises(TypeError):
        BackupManager("my-backups", 7, False, None, 3)  # keep_last is keyword-only


def test_the_constructor_touches_nothing_on_disk(project):
    bm = BackupManager(mirror_dirs=["mirror"], state_files=["state/x.json"])
    assert sorted(os.listdir(project)) == ["state"]
    assert bm.list_backups("state/x.json") == [] and bm.verify().ok
    assert sorted(os.listdir(project)) == ["state"], "neither do listing and verify"
