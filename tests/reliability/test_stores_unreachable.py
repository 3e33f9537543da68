"""Every store restore may use (promise 9), and a store that cannot be seen is not an
empty one (promises 8 and 11): restore takes the newest valid backup across backups/,
mirrors and S3; a folder or mirror that cannot be listed is evidence, never "no
backups"; `drill` changes nothing live; a held lock times out with a clear error."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from backup_manager import BackupManager, LockTimeout, NoValidBackupError, StorageError
from tests.helpers import ROOT, rebalance_doc
from tests.reliability.procs import cli, lock_held


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def lose_locally(backup: Path) -> None:
    """The local copy of a backup is gone (deleted, or made on another machine)."""
    sidecar(backup).unlink()
    backup.unlink()


def snapshot(*folders: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under the folders: path -> (bytes, mtime in ns)."""
    found = {}
    for folder in folders:
        for where, _dirs, files in os.walk(folder):
            for name in files:
                path = Path(where) / name
                found[str(path)] = (path.read_bytes(), path.lstat().st_mtime_ns)
    return found


def two_backups_with_mirror(project, state_file, **options):
    """B1 and B2 of state_file in backups/ and in project/mirror; returns
    (manager, mirror, (B1 path, B1 bytes), (B2 path, B2 bytes))."""
    mirror = project / "mirror"
    bm = BackupManager(project / "backups", mirror_dirs=[mirror], keep_last=50, **options)
    made = []
    for label in ("B1", "B2"):
        content = rebalance_doc(n=label)
        state_file.write_bytes(content)
        made.append((bm.backup_state_file(state_file), content))
    assert (mirror / made[1][0].name).read_bytes() == made[1][1]
    return bm, mirror, made[0], made[1]


# --- 4. restore takes the newest valid backup across every store --------------------------


def test_newer_backup_only_in_a_mirror_is_restored_and_put_back(project, state_file):
    _, mirror, _b1, (b2, v2) = two_backups_with_mirror(project, state_file)
    lose_locally(b2)
    state_file.unlink()
    BackupManager(project / "backups", mirror_dirs=[mirror]).restore(state_file)
    assert state_file.read_bytes() == v2, "restore took local's older backup over the mirror's"
    assert b2.read_bytes() == v2, "the mirror's backup was not put back into backups/"
    assert sidecar(b2).read_text() == f"{hashlib.sha256(v2).hexdigest()}  {b2.name}\n"


def test_newer_backup_only_in_s3_is_restored_and_put_back(project, state_file, bucket):
    endpoint, name = bucket

    def cloud_manager():
        return BackupManager(project / "backups", cloud_enabled=True, s3_bucket=name,
                             s3_endpoint_url=endpoint, s3_region="us-east-1")

    bm = cloud_manager()
    state_file.write_bytes(rebalance_doc(n="B1"))
    bm.backup_state_file(state_file)
    v2 = rebalance_doc(n="B2")
    state_file.write_bytes(v2)
    b2 = bm.backup_state_file(state_file)
    assert bm.sync().pending == 0
    lose_locally(b2)
    state_file.unlink()
    cloud_manager().restore(state_file)
    assert state_file.read_bytes() == v2, "restore took local's older backup over S3's"
    assert b2.read_bytes() == v2, "the S3 backup was not put back into backups/"
    assert sidecar(b2).read_text() == f"{hashlib.sha256(v2).hexdigest()}  {b2.name}\n"


def test_newer_damaged_mirror_copy_is_passed_over_for_an_older_valid_local_one(project,
                                                                                state_file):
    _, mirror, (b1, v1), (b2, _v2) = two_backups_with_mirror(project, state_file)
    lose_locally(b2)
    (mirror / b2.name).write_bytes(b"{}")  # no longer matches its sidecar
    state_file.unlink()
    BackupManager(project / "backups", mirror_dirs=[mirror]).restore(state_file)
    assert state_file.read_bytes() == v1


def test_equal_names_prefer_the_local_copy(project, state_file):
    _, mirror, _b1, (b2, v2) = two_backups_with_mirror(project, state_file)
    other = rebalance_doc(n="the mirror's own bytes under the same name")
    (mirror / b2.name).write_bytes(other)
    sidecar(mirror / b2.name).write_text(f"{hashlib.sha256(other).hexdigest()}  {b2.name}\n")
    state_file.unlink()
    BackupManager(project / "backups", mirror_dirs=[mirror]).restore(state_file)
    assert state_file.read_bytes() == v2


def write_config(project: Path) -> Path:
    config = project / "config.yaml"
    config.write_text(yaml.safe_dump({"backup": {
        "dir": "backups", "state_files": ["state/last_rebalance.json"],
        "mirror_dirs": ["mirror"], "keep_last": 50}}))
    return config


def test_drill_recovers_the_mirrors_newer_backup_and_changes_nothing(project, state_file):
    _, mirror, _b1, (b2, _v2) = two_backups_with_mirror(project, state_file)
    lose_locally(b2)
    config = write_config(project)
    before = snapshot(project / "backups", mirror, project / "state")
    drill = cli(project, "--config", config, "drill")
    assert snapshot(project / "backups", mirror, project / "state") == before, \
        "drill changed a live file"
    assert drill.returncode == 0, drill.stdout + drill.stderr
    assert b2.name in drill.stdout, f"drill did not recover the newest backup:\n{drill.stdout}"


def test_drill_from_a_mirror_alone_changes_nothing(project, state_file):
    _, mirror, (b1, _v1), (b2, _v2) = two_backups_with_mirror(project, state_file)
    lose_locally(b1)
    lose_locally(b2)
    config = write_config(project)
    before = snapshot(project / "backups", mirror, project / "state")
    drill = cli(project, "--config", config, "drill")
    assert drill.returncode == 0, drill.stdout + drill.stderr
    after = snapshot(project / "backups", mirror, project / "state")
    assert sorted(set(after) - set(before)) == [], "drill wrote files into live folders"
    assert after == before, "drill changed a live file"


# --- 5. cannot see is not nothing ---------------------------------------------------------


def unreachable_of(bm: BackupManager, state: Path, label: Path) -> Mapping[str, str]:
    """Restore `state`, which must fail with NoValidBackupError naming the store at
    `label` as unreachable, with a reason; returns the error's `unreachable`."""
    with pytest.raises(NoValidBackupError) as info:
        bm.restore(state)
    unreachable = info.value.unreachable
    assert str(label) in unreachable, \
        f"{label} is not recorded as unreachable (read as empty?): {unreachable!r}"
    assert isinstance(unreachable, Mapping), \
        f"NoValidBackupError.unreachable is a {type(unreachable).__name__}, not a mapping " \
        f"of store to reason: {unreachable!r}"
    assert unreachable[str(label)].strip(), "no reason given"
    return unreachable


def test_backups_folder_that_is_a_file_is_unreachable_not_empty(project):
    folder = project / "backups"
    folder.write_text("a file where the backups folder belongs")
    unreachable_of(BackupManager(folder), project / "state" / "last_rebalance.json", folder)


def test_mirror_whose_path_is_a_file_is_unreachable(project):
    mirror = project / "mirror"
    mirror.write_text("a file where the mirror folder belongs")
    bm = BackupManager(project / "backups", mirror_dirs=[mirror])
    unreachable_of(bm, project / "state" / "last_rebalance.json", mirror)


def test_mirror_whose_parent_is_missing_is_unreachable(project):
    mirror = project / "not-mounted" / "dalio"
    bm = BackupManager(project / "backups", mirror_dirs=[mirror])
    unreachable_of(bm, project / "state" / "last_rebalance.json", mirror)


def test_mirror_folder_simply_absent_is_empty_not_unreachable(project):
    mirror = project / "mirror"  # its parent exists: nothing was ever copied there
    bm = BackupManager(project / "backups", mirror_dirs=[mirror])
    with pytest.raises(NoValidBackupError) as info:
        bm.restore(project / "state" / "last_rebalance.json")
    assert str(mirror) not in info.value.unreachable
    assert not info.value.unreachable


def test_lost_state_with_backups_folder_replaced_by_a_file_refuses_to_trade(tmp_path):
    home = tmp_path / "bot"
    home.mkdir()
    shutil.copy(ROOT / "config.yaml", home / "config.yaml")

    def run():
        return subprocess.run([sys.executable, str(ROOT / "dalio_lite.py"), "--config",
                               str(home / "config.yaml")], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)

    first = run()
    assert first.returncode == 0, first.stderr
    (home / "state" / "last_rebalance.json").unlink()
    shutil.rmtree(home / "backups")
    (home / "backups").write_text("a file where the backups folder belongs")
    second = run()
    assert "order:" not in second.stderr, "DalioLite traded on lost state"
    assert second.returncode == 3, \
        f"exit {second.returncode}, not 3 (refused):\n{second.stderr[-2000:]}"


# --- 11. a lock timeout is a LockTimeout naming the folder and the wait ------------------


@pytest.mark.parametrize("action", ["backup", "restore", "prune"])
def test_lock_timeout_names_the_folder_and_the_wait(project, state_file, action):
    folder = project / "backups"
    BackupManager(folder).backup_state_file(state_file)
    if action == "backup":
        state_file.write_bytes(rebalance_doc(n="new"))
    elif action == "restore":
        state_file.unlink()
    bm = BackupManager(folder, lock_timeout=0.2)
    do = {"backup": lambda: bm.backup_state_file(state_file),
          "restore": lambda: bm.restore(state_file), "prune": bm.prune}[action]
    with lock_held(folder / ".lock"):
        start = time.monotonic()
        with pytest.raises(LockTimeout) as info:
            do()
        waited = time.monotonic() - start
    message = str(info.value)
    assert not isinstance(info.value, StorageError)
    assert str(folder) in message, f"the message does not name the folder: {message}"
    assert "0.2 s" in message, f"the message does not name the wait: {message}"
    assert "Errno" not in message
    assert 0.2 <= waited < 5
