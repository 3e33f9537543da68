"""Restore: the newest valid backup across every store, installed atomically, falling
back past damaged ones; what it replaces is kept (replaced/, corrupt/); quarantine."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tracemalloc
from datetime import UTC, datetime, timedelta

import boto3
import pytest

from backup_manager import (
    BackupManager,
    CloudError,
    ConfigError,
    NoValidBackupError,
    StateKey,
    StorageError,
    UnseenStoresError,
)
from backup_manager.drill import rehearse
from backup_manager.formats import format_backup_name
from backup_manager.local import LocalStore
from backup_manager.restore import Search, find_newest_valid
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
                                           f"dalio-lite-backups/{uploaded.name}.sha256",
                                           "dalio-lite-backups/point-0000000001.json",
                                           "dalio-lite-backups/point-0000000001.json.sha256"]
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
    assert "cannot be seen" in refused.stderr and "s3://gone" in refused.stderr
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


KEY = StateKey("last_rebalance", ".json")


def plant(folder, name, data):
    """A complete backup `name` holding `data` in `folder` (made if missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    (folder / (name + ".sha256")).write_text(f"{hashlib.sha256(data).hexdigest()}  {name}\n")


def plant_at(folder, stem, when, sidecar=True):
    """A backup of `stem`.json taken at `when`, complete unless `sidecar` is False."""
    name = format_backup_name(stem, ".json", when)
    data = rebalance_doc(n=name)
    if sidecar:
        plant(folder, name, data)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return name


def clear_local_backups(project):
    for p in (project / "backups").glob("last_rebalance_*"):
        p.unlink()


def stamp_of(name):
    return name[len("last_rebalance_"):-len(".json")]


def test_the_result_describes_the_backup_installed(state_file, project):
    bm = BackupManager()
    original = state_file.read_bytes()
    made = bm.backup_state_file(state_file)
    state_file.unlink()
    result = bm.restore(state_file)
    (listed,) = bm.list_backups(state_file)
    assert (result.name, result.path, result.timestamp, result.size, result.complete,
            result.location) == (made.name, made, listed.timestamp, len(original), True,
                                 "local")
    assert (result.changed, result.replaced, result.kept_as, result.skipped) == (
        True, None, None, ())
    assert state_file.read_bytes() == original


def test_a_replaced_file_that_a_backup_holds_is_not_kept_again(state_file, project):
    bm, older, newest = two_backups(state_file)
    state_file.write_bytes(newest.read_bytes())
    older_name = bm.list_backups(state_file)[-1].name
    result = bm.restore(state_file, timestamp=stamp_of(older_name))
    assert state_file.read_bytes() == older
    assert (result.replaced, result.kept_as) == ("valid", None)
    assert not (project / "backups" / "replaced").exists(), "the newest backup holds it"


def test_a_failed_install_is_a_storage_error_naming_the_file(state_file, project):
    bm = BackupManager()
    bm.backup_state_file(state_file)
    (project / "gone").symlink_to(project / "nowhere")  # a parent that cannot be made
    target = project / "gone" / "last_rebalance.json"
    with pytest.raises(StorageError, match=f"cannot restore {target}: ") as failed:
        bm.restore(target)
    assert failed.value.errno == errno.EEXIST


def test_the_newest_backup_wins_whichever_store_holds_it(state_file, project):
    bm = BackupManager(mirror_dirs=[project / "mirror"])
    bm.backup_state_file(state_file)
    newer = rebalance_doc(n="newer")
    state_file.write_bytes(newer)
    newest = bm.backup_state_file(state_file)
    for p in (newest, newest.with_name(newest.name + ".sha256")):
        p.unlink()  # backups/ holds only the older one now; the mirror holds both
    state_file.unlink()
    result = bm.restore(state_file)
    assert (result.name, result.location) == (newest.name, next(iter(bm.mirrors)))
    assert state_file.read_bytes() == newer


def test_a_new_style_backup_is_newer_than_any_legacy_name(state_file, project):
    # The original module's local-time names sort before every new-style name, even
    # one that claims the year 2099.
    bm = BackupManager()
    made = bm.backup_state_file(state_file)
    plant(project / "backups", "last_rebalance_2099-01-01_00-00-00.json", rebalance_doc(n=1))
    assert bm.restore(state_file, dry_run=True).name == made.name


def test_on_equal_names_the_first_configured_mirror_wins(state_file, project):
    # Mirror ids are hashes of their paths: order them so that the first configured
    # one has the larger id, so only the configured order can make it win.
    dirs = [project / "m1", project / "m2"]
    ids = list(BackupManager(mirror_dirs=dirs).mirrors)
    if ids[0] < ids[1]:
        dirs.reverse()
    bm = BackupManager(mirror_dirs=dirs)
    made = bm.backup_state_file(state_file)
    clear_local_backups(project)
    state_file.unlink()
    result = bm.restore(state_file)
    assert (result.name, result.location) == (made.name, next(iter(bm.mirrors)))


def test_a_mirror_that_cannot_be_listed_is_passed_over(state_file, project):
    unmounted = project / "not-mounted" / "mirror"
    BackupManager(mirror_dirs=[project / "good"]).backup_state_file(state_file)
    clear_local_backups(project)
    state_file.unlink()
    bm = BackupManager(mirror_dirs=[unmounted, project / "good"])
    # The unmounted mirror may hold newer state: nothing is installed unless asked for.
    with pytest.raises(UnseenStoresError, match="not-mounted/mirror could not be seen"):
        bm.restore(state_file)
    assert not state_file.exists()
    result = bm.restore(state_file, from_reachable=True)
    assert result.location == list(bm.mirrors)[1]
    clear_local_backups(project)  # the restore put the backup back into backups/
    with pytest.raises(NoValidBackupError) as failed:
        BackupManager(mirror_dirs=[unmounted]).restore(state_file)
    assert list(failed.value.unreachable) == [str(unmounted)]
    assert failed.value.unreachable[str(unmounted)].startswith("cannot list: ")


def test_a_mirror_that_failed_in_this_run_is_not_asked_again(state_file, project):
    unmounted = project / "not-mounted" / "mirror"
    bm = BackupManager(mirror_dirs=[unmounted, project / "good"])
    bm.backup_state_file(state_file)  # the copy to the unmounted mirror fails
    clear_local_backups(project)
    state_file.unlink()
    with pytest.raises(UnseenStoresError):
        bm.restore(state_file)
    assert bm.restore(state_file, from_reachable=True).location == list(bm.mirrors)[1]
    state_file.unlink()
    clear_local_backups(project)  # the restore put the backup back into backups/
    shutil.rmtree(project / "good")
    with pytest.raises(NoValidBackupError) as failed:
        bm.restore(state_file)
    assert failed.value.unreachable[str(unmounted)].startswith("not asked again: ")


class FailingReads(LocalStore):
    """A store that lists its backups but cannot read any (an S3 that errs)."""

    reads = 0

    @property
    def label(self):
        return "s3://flaky/prefix"

    def read(self, name, *, max_bytes=None):
        self.reads += 1
        raise CloudError("read timed out")

    def path(self, name):
        return None  # remote, as a bucket is


def test_a_store_that_fails_a_read_is_not_asked_again_in_that_search(tmp_path):
    local, cloud = tmp_path / "local", FailingReads(tmp_path / "cloud")
    plant(local, "last_rebalance_2026-02-17_10-00-00.000000Z.json", rebalance_doc(n="old"))
    for hour in (11, 12):
        plant(cloud.root, f"last_rebalance_2026-02-17_{hour}-00-00.000000Z.json",
              rebalance_doc(n=hour))
    search = Search()
    chosen = find_newest_valid([("local", LocalStore(local)), ("s3", cloud)], KEY, None, {},
                               search)
    assert chosen.backup.name == "last_rebalance_2026-02-17_10-00-00.000000Z.json"
    assert cloud.reads == 1
    assert search.unreachable == {
        cloud.label: "cannot read last_rebalance_2026-02-17_12-00-00.000000Z.json: "
                     "read timed out"}


def test_a_file_never_backed_up_reports_an_empty_folder(project):
    (project / "backups").mkdir()
    with pytest.raises(NoValidBackupError) as failed:
        BackupManager().restore("state/last_rebalance.json")
    assert failed.value.tried == [("backups", f"no backups found in {project / 'backups'}")]
    assert (failed.value.found, failed.value.unreachable) == (0, {})


def test_no_backups_folder_names_the_folder_looked_in(project):
    with pytest.raises(NoValidBackupError) as failed:
        BackupManager().restore("state/last_rebalance.json")
    assert failed.value.tried == [("backups", "no backups found: looked in "
                                              f"{project / 'backups'}, which does not exist")]
    assert (failed.value.found, failed.value.unreachable) == (0, {})


def test_an_empty_bucket_reports_no_backups(project, bucket):
    bm = cloud_manager(*bucket)
    with pytest.raises(NoValidBackupError) as failed:
        bm.restore("state/last_rebalance.json", source="cloud")
    assert failed.value.tried == [(bm.cloud.label, "no backups")]


def only_damaged_backups(bm, state_file, project, count):
    """`count` backups of state_file, every one then overwritten with other bytes."""
    for n in range(count):
        state_file.write_bytes(rebalance_doc(n=n))
        bm.backup_state_file(state_file)
    for p in (project / "backups").glob("last_rebalance_*.json"):
        p.write_bytes(b"{}")
    state_file.unlink()


def test_every_damaged_backup_counts_as_found(state_file, project):
    bm = BackupManager()
    only_damaged_backups(bm, state_file, project, 3)
    with pytest.raises(NoValidBackupError) as failed:
        bm.restore(state_file)
    assert failed.value.found == 3


@pytest.mark.parametrize("damaged,more", [(10, ""), (11, "; and 1 more"),
                                           (12, "; and 2 more")])
def test_the_message_lists_ten_failures_and_counts_the_rest(state_file, project, damaged,
                                                            more):
    bm = BackupManager(keep_last=20)
    only_damaged_backups(bm, state_file, project, damaged)
    with pytest.raises(NoValidBackupError) as failed:
        bm.restore(state_file)
    tried = failed.value.tried
    assert len(tried) == damaged
    listed = "; ".join(f"{what}: {why}" for what, why in tried[:10])
    assert str(failed.value) == f"no valid backup of {state_file} ({listed}{more})"


def test_nothing_to_try_is_said_so(project):
    # Names with no such day are no backups: there is nothing to try.
    plant(project / "backups", "last_rebalance_2026-02-30_10-00-00.000000Z.json",
          rebalance_doc())
    with pytest.raises(NoValidBackupError) as failed:
        BackupManager().restore("state/last_rebalance.json")
    assert str(failed.value) == \
        "no valid backup of state/last_rebalance.json (nothing to try)"


@pytest.fixture
def credentials(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


def sent_requests(manager):
    sent = []
    manager.cloud.client.meta.events.register(
        "before-send.s3.*", lambda request, **_: sent.append(request.method))
    return sent


def test_a_cloud_that_could_not_be_listed_is_not_asked_again_in_the_run(
        state_file, project, credentials):
    BackupManager().backup_state_file(state_file)
    state_file.unlink()
    bm = BackupManager(cloud_enabled=True, s3_bucket="nowhere", s3_region="us-east-1",
                       s3_endpoint_url=f"http://127.0.0.1:{refused_port()}",
                       s3_client_config={"connect_timeout": 0.5, "read_timeout": 0.5})
    sent = sent_requests(bm)
    assert bm.restore(state_file, from_reachable=True).location == "local"
    state_file.write_bytes(rebalance_doc(n="next"))
    assert bm.backup_state_file(state_file) is not None
    assert sent == ["GET"], "the listing failed: the backup's copy waits in the outbox"
    assert bm.status()["targets"][0]["pending"] == 2, "the backup and its restore point"


def test_an_unreachable_cloud_is_named_when_nothing_is_found(project, credentials):
    bm = BackupManager(cloud_enabled=True, s3_bucket="nowhere", s3_region="us-east-1",
                       s3_endpoint_url=f"http://127.0.0.1:{refused_port()}",
                       s3_client_config={"connect_timeout": 0.5, "read_timeout": 0.5})
    with pytest.raises(NoValidBackupError) as failed:
        bm.restore("state/last_rebalance.json")
    (label,) = failed.value.unreachable
    assert label == bm.cloud.label
    assert failed.value.unreachable[label].startswith("cannot list: ")


def test_a_drill_restores_into_a_scratch_folder_only(state_file, project):
    bm = BackupManager()
    made = bm.backup_state_file(state_file)
    live = state_file.read_bytes()
    before = sorted(p.name for p in (project / "backups").iterdir())
    (report,) = rehearse(bm, [state_file])
    assert (report["ok"], report["backup"], report["source"], report["error"]) == (
        True, made.name, "local", None)
    assert state_file.read_bytes() == live
    assert sorted(p.name for p in (project / "backups").iterdir()) == before


def test_a_rehearsal_overwrites_its_target_and_keeps_nothing(state_file, project):
    bm = BackupManager()
    made = bm.backup_state_file(state_file)
    target = project / "scratch" / "last_rebalance.json"
    target.parent.mkdir()
    target.write_bytes(b"garbage{")
    before = sorted(p.name for p in (project / "backups").iterdir())
    result = bm.install_restore(bm.plan_restore(target), rehearsal=True)
    assert (result.name, result.replaced, result.kept_as, result.changed) == (
        made.name, "invalid", None, True)
    assert target.read_bytes() == state_file.read_bytes()
    assert sorted(p.name for p in (project / "backups").iterdir()) == before


def test_a_restored_file_gets_its_backup_mode(state_file, project):
    state_file.chmod(0o640)
    bm = BackupManager()
    bm.backup_state_file(state_file)
    state_file.unlink()
    bm.restore(state_file)
    assert state_file.stat().st_mode & 0o777 == 0o640


def test_restore_makes_every_missing_folder_of_the_path(state_file, project):
    bm = BackupManager()
    original = state_file.read_bytes()
    bm.backup_state_file(state_file)
    target = project / "new" / "home" / "last_rebalance.json"
    assert bm.restore(target).changed
    assert target.read_bytes() == original


def test_a_damaged_sidecar_does_not_hide_an_older_backup_holding_the_replaced_bytes(
        state_file, project):
    bm = BackupManager()
    held = state_file.read_bytes()
    bm.backup_state_file(state_file)
    state_file.write_bytes(rebalance_doc(n="middle"))
    middle = bm.backup_state_file(state_file)
    state_file.write_bytes(rebalance_doc(n="newest"))
    newest = bm.backup_state_file(state_file)
    newest.with_name(newest.name + ".sha256").write_text("junk")
    state_file.write_bytes(held)
    result = bm.restore(state_file)
    assert (result.name, result.replaced, result.kept_as) == (middle.name, "valid", None)
    assert not (project / "backups" / "replaced").exists(), "the oldest backup holds it"


def test_a_state_path_that_is_a_folder_cannot_be_read(state_file, project):
    bm = BackupManager()
    bm.backup_state_file(state_file)
    state_file.unlink()
    state_file.mkdir()
    with pytest.raises(StorageError) as failed:
        bm.restore(state_file)
    assert failed.value.strerror == f"cannot read {state_file}: not a regular file"
    assert failed.value.errno == errno.EINVAL


def test_quarantine_moves_every_backup_of_one_file_and_its_invalid_state_aside(project):
    when = datetime(2026, 3, 1, 12, tzinfo=UTC)
    bm = BackupManager(clock=lambda: when)
    backups = project / "backups"
    older = plant_at(backups, "last_rebalance", when - timedelta(days=2))
    newer = plant_at(backups, "last_rebalance", when - timedelta(days=1))
    incomplete = plant_at(backups, "last_rebalance", when - timedelta(hours=3), sidecar=False)
    orphan = plant_at(backups, "last_rebalance", when - timedelta(days=3))
    (backups / orphan).unlink()
    other = plant_at(backups, "other", when - timedelta(days=1))
    state = project / "state" / "last_rebalance.json"
    state.write_bytes(b"garbage{")
    moved = bm.quarantine(state)
    kept = f"corrupt/{format_backup_name('last_rebalance', '.json', when)}"
    assert moved == [f"corrupt/{incomplete}",
                     f"corrupt/{newer}.sha256", f"corrupt/{newer}",
                     f"corrupt/{older}.sha256", f"corrupt/{older}",
                     f"corrupt/{orphan}.sha256", kept]
    assert not state.exists()
    assert (backups / kept).read_bytes() == b"garbage{"
    assert (backups / "corrupt").stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in backups.iterdir() if p.is_file()) == [
        ".lock", other, other + ".sha256"]
    assert bm.quarantine(state) == [], "a second fresh start finds nothing more to move"


def test_quarantine_leaves_a_valid_state_file_alone(state_file, project):
    bm = BackupManager()
    made = bm.backup_state_file(state_file)
    live = state_file.read_bytes()
    assert bm.quarantine(state_file) == [f"corrupt/{made.name}.sha256", f"corrupt/{made.name}"]
    assert state_file.read_bytes() == live


def test_a_huge_sidecar_is_never_read_whole(state_file, project):
    # A sparse 64 MiB sidecar: the right line, then NULs. Restore passes over its backup
    # and, keeping the replaced file, checks which backup holds it: both reads of that
    # sidecar stop after a few KiB.
    bm = BackupManager()
    bm.backup_state_file(state_file)
    state_file.write_bytes(rebalance_doc(n="newer"))
    huge = bm.backup_state_file(state_file)
    os.truncate(huge.with_name(huge.name + ".sha256"), 64 << 20)
    state_file.write_bytes(rebalance_doc(n="live, never backed up"))
    tracemalloc.start()
    try:
        result = bm.restore(state_file)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.name != huge.name and result.kept_as.startswith("replaced/")
    assert peak < 8 << 20, f"peak {peak >> 20} MiB: the sidecar was read whole"
