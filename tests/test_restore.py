"""Restore: the newest valid backup across every store, installed atomically, falling
back past damaged ones; what it replaces is kept (replaced/, corrupt/); quarantine."""

from __future__ import annotations

import hashlib
import os
import shutil
from datetime import UTC, datetime

import boto3
import pytest

from backup_manager import BackupManager, ConfigError, NoValidBackupError
from backup_manager.formats import format_backup_name
from tests.helpers import (
    backups_of,
    cloud_home,
    cloud_manager,
    flip_bit,
    rebalance_doc,
    refused_port,
    remote_keys,
    run_bot,
    two_backups,
)


def test_restore_latest_is_byte_identical(state_file):
    bm = BackupManager()
    original = state_file.read_bytes()
    bm.backup_state_file(state_file)
    state_file.unlink()
    assert bm.restore_from_backup(str(state_file)) is True
    assert state_file.read_bytes() == original


def test_restore_creates_missing_state_folder(state_file, project):
    bm = BackupManager()
    original = state_file.read_bytes()
    bm.backup_state_file(state_file)
    state_file.unlink()
    (project / "state").rmdir()
    assert bm.restore_from_backup("state/last_rebalance.json")
    assert state_file.read_bytes() == original


DAMAGES = {
    "bit flipped": flip_bit,
    "truncated": lambda p: p.write_bytes(p.read_bytes()[:10]),
    "empty": lambda p: p.write_bytes(b""),
    "sidecar missing": lambda p: p.with_name(p.name + ".sha256").unlink(),
    "sidecar empty": lambda p: p.with_name(p.name + ".sha256").write_bytes(b""),
    "sidecar garbage": lambda p: p.with_name(p.name + ".sha256").write_bytes(b"zz  x\n"),
    "backup deleted, sidecar left": lambda p: p.unlink(),
    "replaced by a folder": lambda p: (p.unlink(), p.mkdir()),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_restore_falls_back_past_damaged_newest(state_file, damage, caplog):
    bm, older, newest = two_backups(state_file)
    DAMAGES[damage](newest)
    assert bm.restore_from_backup(state_file) is True
    assert state_file.read_bytes() == older
    if damage not in ("backup deleted, sidecar left", "replaced by a folder"):
        assert f"skipping backup {newest.name}" in caplog.text


def test_restore_skips_backups_with_invalid_content(state_file, project):
    bm, older, newest = two_backups(state_file)
    bad = b'{"timestamp": "not a time"}'
    newest.write_bytes(bad)
    newest.with_name(newest.name + ".sha256").write_text(
        f"{__import__('hashlib').sha256(bad).hexdigest()}  {newest.name}\n")
    result = bm.restore(state_file)
    assert state_file.read_bytes() == older
    assert any("timestamp" in why for _, why in result.skipped)


def test_no_valid_backup_returns_false_and_raises_in_rich_call(state_file):
    bm, _, newest = two_backups(state_file)
    for p in (state_file.parent.parent / "backups").glob("last_rebalance_*.json"):
        flip_bit(p)
    assert bm.restore_from_backup(state_file) is False
    assert not state_file.exists()
    with pytest.raises(NoValidBackupError) as info:
        bm.restore(state_file)
    assert len(info.value.tried) == 2
    assert all("checksum mismatch" in why for _, why in info.value.tried)


def test_restore_of_never_backed_up_file_is_false(project):
    assert BackupManager().restore_from_backup("state/last_rebalance.json") is False


def test_restore_by_timestamp_prefix(state_file, project):
    bm = BackupManager(keep_last=10, clock=lambda: datetime(2026, 2, 17, 10, 30,
                                                            tzinfo=UTC))
    first = rebalance_doc(datetime(2026, 2, 1, tzinfo=UTC))
    state_file.write_bytes(first)
    bm.backup_state_file(state_file)
    bm.folder.clock = lambda: datetime(2026, 2, 18, 9, 0, tzinfo=UTC)
    state_file.write_bytes(rebalance_doc(datetime(2026, 2, 2, tzinfo=UTC)))
    bm.backup_state_file(state_file)
    assert bm.restore_from_backup(state_file, "2026-02-17_10-30-00") is True
    assert state_file.read_bytes() == first
    assert bm.restore_from_backup(state_file, "2026-02-19") is False


@pytest.mark.parametrize("bad", ["*", "2026-02-1[0-9]", "../x", "a/b"])
def test_restore_refuses_glob_and_path_timestamps(state_file, bad):
    bm = BackupManager()
    bm.backup_state_file(state_file)
    with pytest.raises(ValueError, match="timestamp"):
        bm.restore_from_backup(state_file, bad)


def test_valid_replaced_file_is_kept_as_backup(state_file, project):
    bm = BackupManager()
    old = state_file.read_bytes()
    bm.backup_state_file(state_file)
    current = rebalance_doc(n="current, never backed up")
    state_file.write_bytes(current)
    result = bm.restore(state_file)
    assert state_file.read_bytes() == old
    assert result.replaced == "valid"
    assert (project / "backups" / result.kept_as).read_bytes() == current


def test_invalid_replaced_file_goes_to_corrupt(state_file, project):
    bm = BackupManager()
    bm.backup_state_file(state_file)
    state_file.write_bytes(b"garbage{")
    result = bm.restore(state_file)
    assert result.kept_as.startswith("corrupt/")
    assert (project / "backups" / result.kept_as).read_bytes() == b"garbage{"
    assert backups_of(project / "backups") == [result.name], "garbage is not a backup"


def test_restore_when_live_equals_backup_changes_nothing(state_file, project):
    bm = BackupManager()
    bm.backup_state_file(state_file)
    before = sorted(os.listdir(project / "backups"))
    mtime = state_file.stat().st_mtime_ns
    result = bm.restore(state_file)
    assert result.changed is False
    assert state_file.stat().st_mtime_ns == mtime
    assert sorted(os.listdir(project / "backups")) == before


def test_dry_run_changes_nothing(state_file, project):
    bm = BackupManager()
    bm.backup_state_file(state_file)
    state_file.write_bytes(b"garbage")
    before = sorted(os.listdir(project / "backups"))
    result = bm.restore(state_file, dry_run=True)
    assert result.replaced == "invalid" and result.kept_as is None
    assert state_file.read_bytes() == b"garbage"
    assert sorted(os.listdir(project / "backups")) == before


def test_backup_that_is_a_symlink_is_never_restored(state_file, project):
    bm = BackupManager()
    good = bm.backup_state_file(state_file)
    evil = project / "evil.json"
    evil.write_bytes(rebalance_doc(n="evil"))
    name = format_backup_name("last_rebalance", ".json", datetime.now(UTC))
    (project / "backups" / name).symlink_to(evil)
    digest = __import__("hashlib").sha256(evil.read_bytes()).hexdigest()
    (project / "backups" / (name + ".sha256")).write_text(f"{digest}  {name}\n")
    state_file.unlink()
    assert bm.restore_from_backup(state_file)
    assert state_file.read_bytes() == good.read_bytes()


def test_restore_from_cloud_when_local_backups_are_gone(project, state_file, bucket):
    endpoint, name = bucket
    bm = cloud_manager(endpoint, name)
    original = state_file.read_bytes()
    bm.backup_state_file(state_file)
    shutil.rmtree(project / "backups")
    state_file.unlink()
    fresh = cloud_manager(endpoint, name)
    result = fresh.restore(state_file)
    assert result.location == "s3"
    assert state_file.read_bytes() == original
    assert (project / "backups" / result.name).read_bytes() == original
    assert fresh.verify().ok, "the downloaded backup and its sidecar are local again"


def test_cloud_restore_skips_damaged_and_foreign_objects(project, bucket):
    endpoint, name = bucket
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    good = rebalance_doc(n="good")
    good_name = "last_rebalance_2026-01-01_00-00-00.000000Z.json"

    def put(key, body):
        client.put_object(Bucket=name, Key=f"dalio-lite-backups/{key}", Body=body)

    put(good_name, good)
    put(good_name + ".sha256", f"{hashlib.sha256(good).hexdigest()}  {good_name}\n".encode())
    newer = "last_rebalance_2026-02-01_00-00-00.000000Z.json"
    put(newer, rebalance_doc(n="tampered"))
    put(newer + ".sha256", f"{hashlib.sha256(b'x').hexdigest()}  {newer}\n".encode())
    put("last_rebalance_2026-03-01_00-00-00.000000Z.json", rebalance_doc(n="no sidecar"))
    put("last_rebalance_attempt_2026-04-01_00-00-00.000000Z.json", rebalance_doc(n="other"))
    client.put_object(Bucket=name, Key="dalio-lite-backups/../../last_rebalance_2026-05-01_"
                      "00-00-00.000000Z.json", Body=rebalance_doc(n="escape"))
    client.put_object(Bucket=name, Key="dalio-lite-backups/sub/last_rebalance_2026-06-01_"
                      "00-00-00.000000Z.json", Body=rebalance_doc(n="nested"))
    bm = cloud_manager(endpoint, name)
    result = bm.restore("state/last_rebalance.json")
    assert (project / "state" / "last_rebalance.json").read_bytes() == good
    assert result.name == good_name
    assert not (project / "last_rebalance_2026-05-01_00-00-00.000000Z.json").exists()
    assert sorted(p.name for p in (project / "backups").iterdir() if p.name != ".lock") == \
        [good_name, good_name + ".sha256"]


def test_auto_restore_prefers_a_newer_local_backup_to_an_older_one_in_s3(project, state_file,
                                                                        bucket):
    endpoint, name = bucket
    older = rebalance_doc(n="older, only in the bucket")
    state_file.write_bytes(older)
    uploaded = cloud_manager(endpoint, name).backup_state_file(state_file)
    assert remote_keys(endpoint, name) == [f"dalio-lite-backups/{uploaded.name}",
                                           f"dalio-lite-backups/{uploaded.name}.sha256"]
    uploaded.with_name(uploaded.name + ".sha256").unlink()
    uploaded.unlink()
    newer = rebalance_doc(n="newer, only local")
    state_file.write_bytes(newer)
    local = BackupManager().backup_state_file(state_file)
    assert local.name > uploaded.name
    state_file.unlink()
    result = cloud_manager(endpoint, name).restore(state_file, source="auto")
    assert (result.name, result.location) == (local.name, "local")
    assert state_file.read_bytes() == newer


def test_replaced_valid_state_is_kept_aside_and_never_sent_as_a_backup(project, state_file,
                                                                         bucket):
    endpoint, name = bucket
    bm = cloud_manager(endpoint, name)
    bm.backup_state_file(state_file)
    replaced = rebalance_doc(n="never backed up")
    state_file.write_bytes(replaced)
    result = bm.restore(state_file)
    assert result.kept_as.startswith("replaced/")
    assert (project / "backups" / result.kept_as).read_bytes() == replaced
    assert bm.outbox.pending("s3") == [], "a replaced file is no backup: restore never picks it"
    assert bm.sync().copied == 0
    assert not any("replaced" in key for key in remote_keys(endpoint, name))


def test_cloud_source_needs_cloud_config(project):
    with pytest.raises(ConfigError, match="cloud_enabled"):
        BackupManager().restore("state/last_rebalance.json", source="cloud")


def test_new_machine_drill(tmp_path, bucket):
    endpoint, name = bucket
    home = cloud_home(tmp_path, endpoint, name)
    first = run_bot(home)
    assert first.returncode == 0, first.stderr
    keys = remote_keys(endpoint, name)
    assert any(k.endswith(".json.sha256") and "last_rebalance_" in k for k in keys)
    state = {p.name: p.read_bytes() for p in (home / "state").glob("*.json")}
    shutil.rmtree(home / "state")
    shutil.rmtree(home / "backups")
    second = run_bot(home)
    assert second.returncode == 0, second.stderr
    assert "order:" not in second.stderr
    for file_name in ("last_rebalance.json", "paper_account.json"):
        assert (home / "state" / file_name).read_bytes() == state[file_name]
    assert list((home / "backups").glob("last_rebalance_*.json.sha256"))


def test_unreachable_cloud_and_no_local_state_refuses(tmp_path):
    home = cloud_home(tmp_path, f"http://127.0.0.1:{refused_port()}", "gone")
    refused = run_bot(home)
    assert refused.returncode == 3, refused.stderr
    assert "could not be read" in refused.stderr
    assert "order:" not in refused.stderr


def test_quarantine_moves_every_backup_and_an_invalid_live_file_aside(state_file, project):
    bm = BackupManager()
    made = {}
    for i in range(2):
        state_file.write_bytes(rebalance_doc(n=i))
        path = bm.backup_state_file(state_file)
        made[path.name] = path.read_bytes()
    other = project / "state" / "rebalance.json"
    other.write_text('{"x": 1}')
    own = bm.backup_state_file(other).name
    state_file.write_bytes(b"garbage{")
    moved = bm.quarantine(state_file)
    folder = project / "backups"
    expected = {f"corrupt/{n}{side}" for n in made for side in ("", ".sha256")}
    assert expected <= set(moved)
    (live,) = set(moved) - expected
    assert (folder / live).read_bytes() == b"garbage{", "the invalid live file is kept"
    assert not state_file.exists()
    for name, data in made.items():
        assert (folder / "corrupt" / name).read_bytes() == data, "moved, never deleted"
    assert backups_of(folder) == [], "no backup of last_rebalance is left in backups/"
    assert backups_of(folder, "rebalance") == [own], "another state file's are untouched"
    assert bm.restore_from_backup(state_file) is False, "corrupt/ is never restored from"


def test_quarantine_leaves_a_valid_live_file_in_place(state_file, project):
    bm = BackupManager()
    made = bm.backup_state_file(state_file).name
    live = state_file.read_bytes()
    assert sorted(bm.quarantine(state_file)) == [f"corrupt/{made}", f"corrupt/{made}.sha256"]
    assert state_file.read_bytes() == live
