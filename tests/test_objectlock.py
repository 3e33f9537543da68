"""History that cannot be erased: with backup.s3_object_lock every object put in S3 is
locked (HeadObject shows the mode and retain-until), a locked version cannot be deleted,
prune keeps working, and status and verify --cloud say what the bucket protects against.
Over HTTP against the moto server on 127.0.0.1, with buckets made with Object Lock."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import boto3
import pytest
import yaml
from botocore.exceptions import ClientError

from backup_manager import BackupManager, ConfigError
from backup_manager.config import backup_options
from backup_manager.objectlock import Exposure, ObjectLock, Protection
from tests.helpers import (
    ROOT,
    cloud_home,
    cloud_manager,
    count_requests,
    rebalance_doc,
    run_bot,
)

GOVERNANCE_3 = {"mode": "GOVERNANCE", "days": 3}


def client(endpoint):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def versions(endpoint, bucket):
    """(key, version id) of every version in the bucket."""
    reply = client(endpoint).list_object_versions(Bucket=bucket)
    return sorted((v["Key"], v["VersionId"]) for v in reply.get("Versions", []))


def cli(folder, *args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "backup_manager", *args], cwd=folder,
                          capture_output=True, text=True, env=env, timeout=120)


def write_config(folder, endpoint, bucket, **backup):
    doc = {"backup": {"state_files": ["state/last_rebalance.json"], "cloud_enabled": True,
                      "s3_bucket": bucket, "s3_endpoint_url": endpoint,
                      "s3_region": "us-east-1", **backup}}
    (folder / "config.yaml").write_text(yaml.safe_dump(doc))


# --- every PUT is locked ------------------------------------------------------------------


@pytest.mark.parametrize("mode,days", [("GOVERNANCE", 3), ("COMPLIANCE", 1)])
def test_every_object_put_is_locked_until_now_plus_days(project, state_file, locked_bucket,
                                                        mode, days):
    endpoint, bucket = locked_bucket
    bm = cloud_manager(endpoint, bucket, s3_object_lock={"mode": mode, "days": days})
    before = datetime.now(UTC)
    bm.backup_state_file(state_file)
    after = datetime.now(UTC)
    keys = [key for key, _ in versions(endpoint, bucket)]
    # The backup, its sidecar, the restore point and its sidecar.
    assert len(keys) == 4 and sum(k.endswith(".sha256") for k in keys) == 2, keys
    for key in keys:
        head = client(endpoint).head_object(Bucket=bucket, Key=key)
        assert head["ObjectLockMode"] == mode, key
        until = head["ObjectLockRetainUntilDate"]
        # S3 keeps the date to the second.
        assert before + timedelta(days=days, seconds=-1) <= until, key
        assert until <= after + timedelta(days=days, seconds=1), key


def test_without_the_setting_nothing_is_locked(project, state_file, locked_bucket):
    endpoint, bucket = locked_bucket
    cloud_manager(endpoint, bucket).backup_state_file(state_file)
    for key, _ in versions(endpoint, bucket):
        assert "ObjectLockMode" not in client(endpoint).head_object(Bucket=bucket, Key=key)


def test_a_locked_version_cannot_be_deleted(project, state_file, locked_bucket):
    """What a leaked key tries: delete each version. moto answers 403, and the backup
    still restores from the bucket alone."""
    endpoint, bucket = locked_bucket
    bm = cloud_manager(endpoint, bucket, s3_object_lock=GOVERNANCE_3)
    bm.backup_state_file(state_file)
    original = state_file.read_bytes()
    held = versions(endpoint, bucket)
    for key, version in held:
        with pytest.raises(ClientError) as caught:
            client(endpoint).delete_object(Bucket=bucket, Key=key, VersionId=version)
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert caught.value.response["Error"]["Code"] == "AccessDenied"
    assert versions(endpoint, bucket) == held
    state_file.unlink()
    (project / "backups").rename(project / "gone")
    assert bm.restore_from_backup(state_file)
    assert state_file.read_bytes() == original


def test_the_store_reads_the_lock_of_an_object(locked_bucket):
    from backup_manager.s3 import S3Store

    endpoint, bucket = locked_bucket
    store = S3Store(bucket, "p", endpoint_url=endpoint, region="us-east-1",
                    object_lock=ObjectLock("COMPLIANCE", 2))
    store.write("a.json", b"{}")
    mode, until = store.lock_of("a.json")
    assert mode == "COMPLIANCE"
    assert timedelta(days=2, seconds=-60) < until - datetime.now(UTC) <= timedelta(days=2)
    assert store.lock_of("missing.json") is None
    S3Store(bucket, "q", endpoint_url=endpoint, region="us-east-1").write("b.json", b"{}")
    assert S3Store(bucket, "q", endpoint_url=endpoint, region="us-east-1").lock_of(
        "b.json") is None


# --- prune --------------------------------------------------------------------------------


def test_prune_with_locked_versions_completes_and_keeps_them(project, state_file,
                                                             locked_bucket):
    """Pruning is the disk side of retention: backups/ is pruned, the bucket never (its
    history is the bucket's to keep), so locked versions are no error and all stay."""
    endpoint, bucket = locked_bucket
    bm = cloud_manager(endpoint, bucket, s3_object_lock=GOVERNANCE_3, keep_last=1,
                       keep_daily=0)
    for n in range(4):
        state_file.write_bytes(rebalance_doc(extra=n))
        bm.backup_state_file(state_file)  # each backup prunes after it, too
    held = versions(endpoint, bucket)
    plan = bm.prune()
    assert len([p for p in (project / "backups").glob("last_rebalance_*.json")]) == 1
    assert any(not d.keep for d in plan) or len(held) > 4  # backups/ really was pruned
    assert versions(endpoint, bucket) == held
    assert sum(k.startswith("dalio-lite-backups/last_rebalance_") and k.endswith(".json")
               for k, _ in held) == 4
    for key, _ in held:
        assert client(endpoint).head_object(Bucket=bucket, Key=key)["ObjectLockMode"]
    assert bm.verify(cloud=True).ok


# --- a bucket without Object Lock ---------------------------------------------------------


def test_a_bucket_without_object_lock_refuses_and_the_copies_wait(project, state_file,
                                                                  bucket, caplog):
    """The local backup is made (promise 6); nothing goes up unlocked; the copies wait in
    the outbox with an error naming the setting, and go up locked once the bucket has
    Object Lock."""
    endpoint, name = bucket
    bm = cloud_manager(endpoint, name, s3_object_lock=GOVERNANCE_3)
    made = bm.backup_state_file(state_file)
    assert made.is_file()
    assert client(endpoint).list_objects_v2(Bucket=name).get("KeyCount", 0) == 0
    pending = bm.pending_copies("s3")
    assert pending and "backup.s3_object_lock" in pending[0].last_error
    assert "has no Object Lock" in pending[0].last_error
    assert "backup.s3_object_lock asks for GOVERNANCE for 3 day(s)" in caplog.text

    s3 = client(endpoint)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object_lock_configuration(Bucket=name, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled"})
    result = bm.sync()
    assert result.pending == 0 and not result.errors, result.errors
    keys = [k for k, _ in versions(endpoint, name)]
    assert len(keys) == 4
    assert all(s3.head_object(Bucket=name, Key=k)["ObjectLockMode"] == "GOVERNANCE"
               for k in keys)


def test_other_refusals_are_not_taken_for_a_missing_lock(project, state_file, bucket):
    endpoint, name = bucket
    bm = cloud_manager(endpoint, name + "-missing", s3_object_lock=GOVERNANCE_3)
    bm.backup_state_file(state_file)
    error = bm.pending_copies("s3")[0].last_error
    assert "NoSuchBucket" in error and "Object Lock" not in error


# --- status and verify --cloud ------------------------------------------------------------


def status_target(folder):
    proc = cli(folder, "--json", "status")
    doc = json.loads(proc.stdout)
    (target,) = doc["targets"]
    return proc.returncode, doc, target["protection"]


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_status_and_verify_report_a_locked_bucket(project, state_file, locked_bucket, signed):
    """The same with signed copies (backup.key_file): the bucket under the signatures is
    asked, and answers the same."""
    endpoint, bucket = locked_bucket
    client(endpoint).put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 7}}})
    key = {"key_file": "backup.key"} if signed else {}
    write_config(project, endpoint, bucket, s3_object_lock={"mode": "COMPLIANCE", "days": 2},
                 **key)
    if signed:
        assert cli(project, "key", "init").returncode == 0
    assert cli(project, "backup", "state/last_rebalance.json").returncode == 0

    code, doc, protection = status_target(project)
    assert code == 0 and doc["ok"], doc["problems"]
    assert protection == {
        "versioning": "Enabled", "object_lock": True,
        "default_retention": {"mode": "GOVERNANCE", "days": 7, "years": None},
        "asked": {"mode": "COMPLIANCE", "days": 2}, "unread": None,
        "leaked_key_can": str(Exposure.NOTHING), "lock_refused": False}
    text = cli(project, "status").stdout
    assert ("bucket: versioning Enabled; Object Lock on, default retention GOVERNANCE 7 "
            "day(s); backup.s3_object_lock asks: COMPLIANCE for 2 day(s)") in text
    assert "no key, not even the account's root user, can delete a locked copy" in text

    proc = cli(project, "verify", "--cloud")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "bucket: versioning Enabled; Object Lock on" in proc.stdout
    assert "bucket: newest restore point point-0000000001.json: locked COMPLIANCE until " \
        in proc.stdout
    doc = json.loads(cli(project, "--json", "verify", "--cloud").stdout)
    assert doc["bucket"]["newest_point_lock"]["mode"] == "COMPLIANCE"
    assert doc["bucket"]["leaked_key_can"] == str(Exposure.NOTHING)


def test_a_default_retention_in_years_is_read_as_years(project, locked_bucket):
    endpoint, bucket = locked_bucket
    client(endpoint).put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Years": 1}}})
    write_config(project, endpoint, bucket)
    _, doc, protection = status_target(project)
    assert protection["default_retention"] == {"mode": "COMPLIANCE", "days": None, "years": 1}
    assert protection["leaked_key_can"] == str(Exposure.NOTHING)
    assert "Object Lock on, default retention COMPLIANCE 1 year(s)" in cli(project,
                                                                           "status").stdout


def test_status_and_verify_report_a_bucket_without_protection(project, state_file, bucket):
    endpoint, name = bucket
    write_config(project, endpoint, name)
    assert cli(project, "backup", "state/last_rebalance.json").returncode == 0
    code, doc, protection = status_target(project)
    assert code == 0 and doc["ok"], doc["problems"]  # a fact, not a PROBLEM
    assert protection["versioning"] == "off" and protection["object_lock"] is False
    assert protection["leaked_key_can"] == str(Exposure.ERASE)
    text = cli(project, "status").stdout
    assert "bucket: versioning off; Object Lock off; backup.s3_object_lock asks: none" in text
    assert "a leaked key can delete or overwrite every copy" in text
    proc = cli(project, "verify", "--cloud")
    assert proc.returncode == 0, proc.stdout
    assert "a leaked key can delete or overwrite every copy" in proc.stdout
    assert "bucket: newest restore point point-0000000001.json: not locked" in proc.stdout


def test_a_versioned_bucket_without_lock_is_reported_as_such(project, state_file, bucket):
    endpoint, name = bucket
    client(endpoint).put_bucket_versioning(Bucket=name,
                                           VersioningConfiguration={"Status": "Enabled"})
    write_config(project, endpoint, name)
    _, _, protection = status_target(project)
    assert protection["versioning"] == "Enabled" and protection["object_lock"] is False
    assert protection["leaked_key_can"] == str(Exposure.ERASE_VERSIONS)


def test_a_lock_the_bucket_cannot_give_is_a_problem(project, state_file, bucket):
    endpoint, name = bucket
    write_config(project, endpoint, name, s3_object_lock=GOVERNANCE_3)
    assert cli(project, "backup", "state/last_rebalance.json").returncode == 0
    code, doc, protection = status_target(project)
    assert code == 1 and protection["lock_refused"] is True
    kinds = {p["kind"] for p in doc["problems"]}
    assert "object-lock-refused" in kinds, doc["problems"]
    text = cli(project, "status").stdout
    assert "PROBLEM: backup.s3_object_lock asks for GOVERNANCE for 3 day(s), but the bucket" \
           in text
    proc = cli(project, "verify", "--cloud")
    assert proc.returncode == 1
    assert "object lock refused" in proc.stdout


def test_status_with_the_endpoint_down_reads_nothing_and_says_so(project, state_file,
                                                                 endpoint):
    write_config(project, endpoint.url, "restartable", s3_object_lock=GOVERNANCE_3)
    endpoint.stop()
    code, doc, protection = status_target(project)
    assert protection["versioning"] is None and protection["object_lock"] is None
    assert protection["leaked_key_can"] == str(Exposure.UNKNOWN)
    assert "Object Lock configuration" in protection["unread"]
    assert "object-lock-refused" not in {p["kind"] for p in doc["problems"]}


def test_status_asks_the_bucket_once_when_one_answer_says_enough(locked_bucket, bucket,
                                                                   endpoint):
    """Object Lock on means versioning on: one request. A bucket that cannot be reached
    costs one timeout, not two. Only a bucket without Object Lock is asked twice."""
    locked = cloud_manager(*locked_bucket)
    sent = count_requests(locked)
    assert locked.cloud.protection().versioning == "Enabled" and len(sent) == 1
    plain = cloud_manager(*bucket)
    sent = count_requests(plain)
    assert plain.cloud.protection().versioning == "off" and len(sent) == 2
    endpoint.stop()
    down = cloud_manager(endpoint.url, "restartable")
    sent = count_requests(down)
    assert down.cloud.protection().unread and len(sent) == 1


@pytest.mark.parametrize("protection,exposure", [
    (Protection("off", False, None, None, None), Exposure.ERASE),
    (Protection("Suspended", False, None, None, None), Exposure.ERASE),
    (Protection("Enabled", False, None, None, None), Exposure.ERASE_VERSIONS),
    (Protection("Enabled", True, None, None, None), Exposure.ERASE_VERSIONS),
    (Protection("Enabled", True, ("GOVERNANCE", 1, None), None, None), Exposure.BYPASS_ONLY),
    (Protection("Enabled", True, ("COMPLIANCE", None, 1), None, None), Exposure.NOTHING),
    (Protection("Enabled", True, None, ObjectLock("GOVERNANCE", 1), None), Exposure.BYPASS_ONLY),
    (Protection("Enabled", True, ("GOVERNANCE", 1, None), ObjectLock("COMPLIANCE", 1), None),
     Exposure.NOTHING),
    (Protection("off", False, None, ObjectLock("COMPLIANCE", 1), None), Exposure.ERASE),
    (Protection(None, None, None, None, "down"), Exposure.UNKNOWN),
    (Protection(None, False, None, None, "denied"), Exposure.UNKNOWN),
    (Protection("Enabled", None, None, None, "denied"), Exposure.UNKNOWN),
    (Protection("off", None, None, None, "denied"), Exposure.ERASE),
])
def test_what_a_leaked_key_can_do(protection, exposure):
    assert protection.exposure == exposure


def test_only_a_lock_asked_of_a_bucket_without_it_is_refused():
    asked = ObjectLock("GOVERNANCE", 1)
    assert Protection("off", False, None, asked, None).refused
    assert not Protection("off", False, None, None, None).refused
    assert not Protection("Enabled", True, None, asked, None).refused
    assert not Protection(None, None, None, asked, "denied").refused


# --- configuration ------------------------------------------------------------------------


CLOUD = {"cloud_enabled": True, "s3_bucket": "b"}


@pytest.mark.parametrize("value,message", [
    ({"mode": "governance", "days": 3},
     "backup.s3_object_lock.mode must be GOVERNANCE or COMPLIANCE, got 'governance'"),
    ({"mode": "LEGAL_HOLD", "days": 3}, "backup.s3_object_lock.mode must be GOVERNANCE"),
    ({"days": 3}, "backup.s3_object_lock.mode must be GOVERNANCE or COMPLIANCE, got None"),
    ({"mode": "GOVERNANCE", "days": 0}, "backup.s3_object_lock.days must be a whole number of "
                                        "days from 1 to 36,500, got 0"),
    ({"mode": "GOVERNANCE", "days": -5}, "got -5"),
    ({"mode": "GOVERNANCE", "days": "7"}, "got '7'"),
    ({"mode": "GOVERNANCE", "days": 1.5}, "got 1.5"),
    ({"mode": "GOVERNANCE", "days": True}, "got True"),
    ({"mode": "GOVERNANCE"}, "backup.s3_object_lock.days must be a whole number"),
    ({"mode": "GOVERNANCE", "days": 36_501}, "got 36501"),
    ({"mode": "GOVERNANCE", "days": 3, "years": 1}, "unknown key(s) years in "
                                                    "backup.s3_object_lock"),
    ("GOVERNANCE", "backup.s3_object_lock must be a mapping {mode: GOVERNANCE or "
                   "COMPLIANCE, days: N}, or null, got 'GOVERNANCE'"),
])
def test_bad_object_lock_values_are_refused_naming_key_and_value(tmp_path, value, message):
    with pytest.raises(ConfigError) as caught:
        backup_options({**CLOUD, "s3_object_lock": value}, tmp_path)
    assert message in str(caught.value)


def test_object_lock_without_cloud_backup_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"backup.s3_object_lock is set but cloud backup "
                                          r"is off \(backup.cloud_enabled: false\)"):
        backup_options({"s3_object_lock": GOVERNANCE_3}, tmp_path)
    with pytest.raises(ConfigError, match="s3_object_lock is set but cloud backup is off"):
        BackupManager(s3_object_lock=GOVERNANCE_3)


def test_an_object_lock_given_to_the_python_api_is_checked_too(project):
    with pytest.raises(ConfigError, match="s3_object_lock.mode must be GOVERNANCE or "
                                          "COMPLIANCE, got 'governance'"):
        BackupManager(cloud_enabled=True, s3_bucket="b",
                      s3_object_lock=ObjectLock("governance", 3))
    with pytest.raises(ConfigError, match="s3_object_lock.days must be a whole number"):
        BackupManager(cloud_enabled=True, s3_bucket="b", s3_object_lock=ObjectLock(
            "GOVERNANCE", 0))
    locked = BackupManager(cloud_enabled=True, s3_bucket="b",
                           s3_object_lock=ObjectLock("COMPLIANCE", 5))
    assert locked.cloud.object_lock == ObjectLock("COMPLIANCE", 5)


def test_good_object_lock_values_are_taken(tmp_path):
    assert backup_options({**CLOUD, "s3_object_lock": {"mode": "COMPLIANCE", "days": 36_500}},
                          tmp_path)["s3_object_lock"] == ObjectLock("COMPLIANCE", 36_500)
    assert backup_options({**CLOUD, "s3_object_lock": None}, tmp_path)["s3_object_lock"] is None
    assert backup_options(CLOUD, tmp_path)["s3_object_lock"] is None


def test_a_bad_value_in_config_yaml_stops_the_command_with_the_key(project, bucket):
    endpoint, name = bucket
    write_config(project, endpoint, name, s3_object_lock={"mode": "GOVERNANCE", "days": 0})
    proc = cli(project, "status")
    assert proc.returncode != 0
    assert "backup.s3_object_lock.days must be a whole number" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- DalioLite itself, and a break-in -----------------------------------------------------


def test_a_break_in_on_a_locked_bucket_is_undone_as_the_docs_say(tmp_path, locked_bucket):
    """DalioLite runs with the lock; a leaked key cannot delete a version (403), hides
    every copy behind a delete marker; the docs' procedure removes the markers, and a
    new machine restores its state from the bucket."""
    endpoint, bucket = locked_bucket
    old = tmp_path / "old"
    old.mkdir()
    home = cloud_home(old, endpoint, bucket, s3_object_lock={"mode": "GOVERNANCE", "days": 1})
    first = run_bot(home)
    assert first.returncode == 0, first.stderr
    s3 = client(endpoint)
    held = versions(endpoint, bucket)
    assert held and all(s3.head_object(Bucket=bucket, Key=k, VersionId=v)["ObjectLockMode"]
                        == "GOVERNANCE" for k, v in held)

    for key, version in held:  # the leaked key
        with pytest.raises(ClientError, match="AccessDenied"):
            s3.delete_object(Bucket=bucket, Key=key, VersionId=version)
        s3.delete_object(Bucket=bucket, Key=key)
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0

    # docs/undeletable.md, "After a break-in": remove the latest delete markers.
    markers = s3.list_object_versions(Bucket=bucket, Prefix="dalio-lite-backups/")
    for marker in markers.get("DeleteMarkers", []):
        if marker["IsLatest"]:
            s3.delete_object(Bucket=bucket, Key=marker["Key"], VersionId=marker["VersionId"])
    assert versions(endpoint, bucket) == held

    new = tmp_path / "new"
    new.mkdir()
    shutil.copytree(home, new / "bot", ignore=shutil.ignore_patterns("state", "backups"))
    again = run_bot(new / "bot")
    assert again.returncode == 0, again.stderr
    for name in ("last_rebalance.json", "paper_account.json"):
        assert (new / "bot" / "state" / name).read_bytes() == \
            (home / "state" / name).read_bytes()
