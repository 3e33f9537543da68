"""The S3 store as configured: a bounded client, checksums, errors translated and
queued, boto3 imported only when the cloud is used."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
import time

import pytest

from backup_manager import BackupManager, NoValidBackupError, UnseenStoresError
from tests.helpers import ROOT, cloud_manager, count_requests, refused_port, remote_keys, stubbed


def test_one_client_per_manager(project, state_file, bucket):
    endpoint, name = bucket
    bm = cloud_manager(endpoint, name)
    bm.backup_state_file(state_file)
    first = bm.cloud.client
    bm.backup_state_file(state_file)
    assert bm.cloud.client is first


def test_default_s3_client_is_bounded(tmp_path):
    """Promise 7 as configured: connect 1 s, read 2 s, one attempt, both when the
    manager is built in code and from a config with no timeout keys."""
    built = BackupManager(tmp_path / "a", cloud_enabled=True, s3_bucket="b",
                          s3_endpoint_url=f"http://127.0.0.1:{refused_port()}",
                          s3_region="us-east-1")
    configured = BackupManager.from_config(
        {"backup": {"cloud_enabled": True, "s3_bucket": "b", "s3_region": "us-east-1",
                    "s3_endpoint_url": f"http://127.0.0.1:{refused_port()}"}},
        base_dir=tmp_path)
    for bm in (built, configured):
        config = bm.cloud.client.meta.config
        assert (config.connect_timeout, config.read_timeout) == (1, 2)
        assert config.retries["total_max_attempts"] == 1


@pytest.mark.timeout(30)  # the default read timeout is 2 s: a 60 s one fails here
def test_backup_against_a_silent_endpoint_returns_with_default_timeouts(project, state_file,
                                                                        silent_endpoint):
    bm = BackupManager(cloud_enabled=True, s3_bucket="hung",
                       s3_endpoint_url=silent_endpoint.url, s3_region="us-east-1")
    start = time.monotonic()
    path = bm.backup_state_file(state_file)
    elapsed = time.monotonic() - start
    assert silent_endpoint.accepted, "the upload really went out to the silent endpoint"
    assert path.read_bytes() == state_file.read_bytes()
    assert bm.verify().ok, "the local backup and its sidecar are complete"
    target = bm.status()["targets"][0]
    assert target["pending"] == 2, "the backup and its restore point wait"
    assert "timeout" in target["last_error"].lower()
    assert elapsed < 15, f"a hung endpoint held the backup call for {elapsed:.0f} s"


def test_s3_timeouts_and_attempts_come_from_config(tmp_path):
    section = {"cloud_enabled": True, "s3_bucket": "b", "s3_region": "us-east-1",
               "s3_endpoint_url": f"http://127.0.0.1:{refused_port()}",
               "s3_connect_timeout_seconds": 4, "s3_read_timeout_seconds": 7.5,
               "s3_max_attempts": 3}
    bm = BackupManager.from_config({"backup": section}, base_dir=tmp_path)
    config = bm.cloud.client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (4, 7.5)
    assert config.retries["total_max_attempts"] == 3


FAULTS = [
    ("BadDigest", 400, "BadDigest"),
    ("AccessDenied", 403, "AccessDenied"),
    ("SlowDown", 503, "SlowDown"),
    ("NoSuchBucket", 404, "NoSuchBucket"),
]


@pytest.mark.parametrize("code,status,expected", FAULTS, ids=[f[0] for f in FAULTS])
def test_put_faults_are_logged_and_queued_never_raised(project, state_file, bucket, code,
                                                       status, expected, caplog):
    endpoint, name = bucket
    bm = cloud_manager(endpoint, name)
    stub = stubbed(bm)
    stub.add_client_error("put_object", service_error_code=code, http_status_code=status)
    path = bm.backup_state_file(state_file)
    assert path.exists()
    assert expected in caplog.text
    (pending,) = [c for c in bm.outbox.pending("s3") if c.attempts]
    assert pending.name == path.name and expected in pending.last_error
    assert [c.name for c in bm.outbox.pending("s3")] == [path.name, "point-0000000001.json"], \
        "after the failure the target is not asked again: its restore point waits too"
    stub.deactivate()
    assert bm.sync().copied == 2


def test_412_with_equal_checksum_counts_as_done(project, state_file, bucket):
    endpoint, name = bucket
    bm = cloud_manager(endpoint, name)
    path = bm.backup_state_file(state_file)
    bm.outbox.add("s3", path.name)
    assert bm.sync().copied == 1
    assert bm.outbox.pending() == []


def test_missing_boto3_names_what_to_install(project, state_file, monkeypatch):
    for module in ("boto3", "botocore", "botocore.exceptions", "botocore.config"):
        monkeypatch.setitem(sys.modules, module, None)
    bm = BackupManager(cloud_enabled=True, s3_bucket="b")
    assert bm.backup_state_file(state_file).exists()
    error = bm.status()["targets"][0]["last_error"]
    assert "pip install 'daliolite[s3]'" in error
    state_file.unlink()
    # The bucket cannot be asked (no boto3): it may hold newer state, so nothing is
    # installed unless the operator says so. Restoring from backups/ needs no boto3.
    assert not bm.restore_from_backup(state_file)
    assert not state_file.exists()
    with pytest.raises(UnseenStoresError, match=r"daliolite\[s3\]"):
        bm.restore(state_file)
    assert bm.restore(state_file, from_reachable=True).location == "local"
    assert bm.restore(state_file, source="local").changed is False
    shutil.rmtree(project / "backups")
    state_file.unlink()
    with pytest.raises(NoValidBackupError) as info:
        bm.restore(state_file)
    assert info.value.unreachable, "a cloud that cannot be asked is evidence, not 'first run'"
    assert "daliolite[s3]" in str(info.value)


def test_cloud_disabled_never_imports_boto3(tmp_path):
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    code = ("import sys, dalio_lite; sys.exit(dalio_lite.main(['--config', sys.argv[1]]) "
            "or ('boto3' in sys.modules or 'botocore' in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "config.yaml")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("sse,kms_key", [("AES256", None), ("aws:kms", "alias/dalio")])
def test_uploads_ask_for_encryption_and_the_expected_owner(project, state_file, bucket, sse,
                                                           kms_key):
    endpoint, name = bucket
    bm = cloud_manager(endpoint, name, s3_sse=sse, s3_kms_key_id=kms_key,
                       s3_expected_bucket_owner="123456789012")
    sent = []

    def headers_of(request, **_):
        sent.append({k: v.decode() if isinstance(v, bytes) else v
                     for k, v in request.headers.items()})

    bm.cloud.client.meta.events.register("before-send.s3.PutObject", headers_of)
    path = bm.backup_state_file(state_file)
    point = path.parent / "point-0000000001.json"
    assert len(sent) == 4, "the backup and its restore point, each with its sidecar"
    for headers, body in zip(sent, [f.read_bytes() for f in (
            path, path.parent / (path.name + ".sha256"), point,
            point.parent / (point.name + ".sha256"))], strict=True):
        assert headers["x-amz-server-side-encryption"] == sse
        assert headers.get("x-amz-server-side-encryption-aws-kms-key-id") == kms_key
        assert headers["x-amz-expected-bucket-owner"] == "123456789012"
        assert headers["If-None-Match"] == "*", "never overwrite"
        assert headers["x-amz-checksum-sha256"] == base64.b64encode(
            hashlib.sha256(body).digest()).decode(), "S3 checks the bytes on arrival"


def test_a_new_machine_recovers_from_s3_with_one_listing_and_a_get_per_object(tmp_path, bucket):
    """Three state files and their point: one listing, then each object and its sidecar
    read once (the point is not read again to put it back)."""
    from backup_manager import recover

    endpoint, name = bucket
    old = tmp_path / "old"
    (old / "state").mkdir(parents=True)
    made = cloud_manager(endpoint, name, backup_dir=old / "backups",
                         state_files=[old / "state" / n for n in ("a.json", "b.json")])
    for n in ("a.json", "b.json"):
        (old / "state" / n).write_text(json.dumps({"n": n}))
    with made.changes("run", "two files, one point"):
        for n in ("a.json", "b.json"):
            made.backup_state_file(old / "state" / n)
    new = tmp_path / "new"
    bm = cloud_manager(endpoint, name, backup_dir=new / "backups",
                       state_files=[new / "state" / n for n in ("a.json", "b.json")])
    sent = count_requests(bm)
    report = recover(bm)
    assert sorted(p.name for p in report.restored) == ["a.json", "b.json"]
    assert sent == ["GET"] * (1 + 2 * 3), "a listing, then the point and two backups, " \
                                          "each with its sidecar"
    assert (new / "backups" / "point-0000000001.json").exists(), "the point was put back"


def test_two_writers_claiming_one_number_in_the_bucket_one_wins(tmp_path, bucket):
    """Both machines read the history at point 1, then both claim point 2 before their
    orders: the bucket's exclusive create lets one through; the other commits nothing,
    here or there, and the refusal is recorded for status with the host's commands."""
    from backup_manager import HostFacts, Refusal, claim_intent
    from backup_manager.problems import status_problems

    endpoint, name = bucket
    a = cloud_manager(endpoint, name, backup_dir=tmp_path / "a" / "backups")
    b = cloud_manager(endpoint, name, backup_dir=tmp_path / "b" / "backups")
    with a.changes("run", "day 0"):
        pass
    assert b.history().newest().sequence == 1  # b reads it; neither has claimed yet
    won, unfenced = a.claim_point("orders", "intent", details={"orders": []})
    assert (won.sequence, unfenced) == (2, {})
    facts = HostFacts(backup_command="bm --config b.yaml",
                      commands={"accept_takeover": "bot --config b.yaml --take-over"})
    with pytest.raises(Refusal, match="another writer committed it first") as refused:
        claim_intent(b, [], facts)
    assert refused.value.commands[:2] == [
        "bm --config b.yaml restore --all --yes  # adopt the newest point's state",
        "bot --config b.yaml --take-over  # keep this machine's state: it becomes the "
        "newest point"]
    assert not (tmp_path / "b" / "backups" / "point-0000000002.json").exists()
    problems = [p for p in status_problems(b.status())]
    assert any("another writer committed it first" in p.what for p in problems), problems
    assert any("bm --config b.yaml restore --all --yes" in p.fix for p in problems), problems
    assert "dalio-lite-backups/point-0000000002.json" in remote_keys(endpoint, name)
    assert b.history().newest().sequence == 2
    assert b.history().newest().writer == won.writer


def _unfinished_claim(endpoint, name, tmp_path, follows):
    """Another machine's claim of point 2 whose run was killed between the point's PUT
    and its sidecar's: the point alone in the bucket, written now."""
    from datetime import UTC, datetime

    from backup_manager.points import Point, encode_point, point_name

    other = cloud_manager(endpoint, name, backup_dir=tmp_path / "other" / "backups")
    point = Point(2, datetime.now(UTC), other.writer, "orders", "intent: 0 order(s)",
                  (follows.sequence, follows.digest), {}, {"orders": []})
    other.cloud.write(point_name(2), encode_point(point))


@pytest.mark.parametrize("minutes_later,finished", [(1, False), (20, True)])
def test_another_writers_unfinished_claim_is_finished_only_past_its_lease(
        tmp_path, bucket, minutes_later, finished):
    """A claim that finds its number held by another writer's point without a sidecar:
    within the intent's lease (by the point's time and by the bucket's clock) that writer
    may be writing the sidecar now: refused as another writer, nothing finished. Past
    it the claim is abandoned, finished here (its sidecar written) for the next run to
    settle."""
    from datetime import UTC, datetime, timedelta

    from backup_manager import UnfinishedClaim, WriterConflict

    endpoint, name = bucket
    me = cloud_manager(endpoint, name, backup_dir=tmp_path / "me" / "backups",
                       clock=lambda: datetime.now(UTC) + timedelta(minutes=minutes_later))
    with me.changes("run", "day 0"):
        pass
    _unfinished_claim(endpoint, name, tmp_path, me.history().newest())
    if finished:
        with pytest.raises(UnfinishedClaim, match="finished now"):
            me.claim_point("orders", "intent", details={"orders": []})
    else:
        with pytest.raises(WriterConflict, match="without its sidecar") as refused:
            me.claim_point("orders", "intent", details={"orders": []})
        assert not isinstance(refused.value, UnfinishedClaim)
    keys = remote_keys(endpoint, name)
    assert ("dalio-lite-backups/point-0000000002.json.sha256" in keys) == finished
    if finished:
        newest = me.history().newest()
        assert (newest.sequence, newest.kind) == (2, "orders")


def test_a_claim_with_require_fence_and_the_bucket_unreachable_commits_nothing(tmp_path):
    """backup.require_fence: a claim that cannot reach every store raises UnfencedClaim,
    and nothing is committed here either (the orders never go ahead)."""
    from backup_manager import UnfencedClaim

    bm = cloud_manager("http://127.0.0.1:9", "nowhere", backup_dir=tmp_path / "backups")
    with pytest.raises(UnfencedClaim, match="require_fence"):
        bm.claim_point("orders", "intent", details={"orders": []}, require_fence=True)
    assert not list((tmp_path / "backups").glob("point-*"))
