"""Copies: backups sent to mirror folders and S3 through the outbox; sync."""

from __future__ import annotations

import base64
import hashlib
import shutil

import boto3

from backup_manager import BackupManager
from tests.helpers import cloud_manager, count_requests, refused_port, remote_keys, stubbed


def test_backup_uploads_backup_then_sidecar_with_verified_checksum(project, state_file, bucket):
    endpoint, name = bucket
    bm = cloud_manager(endpoint, name)
    sent = count_requests(bm)
    path = bm.backup_state_file(state_file)
    assert sent == ["PUT", "PUT"], "exactly two PUTs: no HEAD, no LIST, no extra client"
    keys = remote_keys(endpoint, name)
    assert keys == [f"dalio-lite-backups/{path.name}", f"dalio-lite-backups/{path.name}.sha256"]
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    head = client.head_object(Bucket=name, Key=keys[0], ChecksumMode="ENABLED")
    sidecar_hex = path.with_name(path.name + ".sha256").read_text().split()[0]
    assert base64.b64decode(head["ChecksumSHA256"]).hex() == sidecar_hex
    assert bm.status()["targets"][0]["pending"] == 0


def test_sync_uploads_queue_and_backups_made_while_cloud_was_off(project, state_file, bucket):
    endpoint, name = bucket
    offline = BackupManager()
    made = [offline.backup_state_file(state_file).name for _ in range(3)]
    bm = cloud_manager(endpoint, name)
    report = bm.verify(cloud=True)
    assert {i.status for i in report.problems} == {"not uploaded"}
    progress = []
    result = bm.sync(progress=lambda done, total: progress.append((done, total)))
    assert result.copied == 3 and result.pending == 0
    assert progress[-1] == (3, 3)
    assert remote_keys(endpoint, name) == sorted(
        f"dalio-lite-backups/{n}{side}" for n in made for side in ("", ".sha256"))
    assert bm.verify(cloud=True).ok
    sent = count_requests(bm)
    again = bm.sync()
    assert (again.copied, again.pending) == (0, 0)
    assert sent == ["GET"], "a second sync lists the bucket and uploads nothing again"


def test_refused_endpoint_is_asked_once_per_run(project, state_file, credentials):
    bm = cloud_manager(f"http://127.0.0.1:{refused_port()}", "nowhere")
    sent = count_requests(bm)
    for name in ("a.json", "b.json", "c.json"):
        (project / "state" / name).write_text("{}")
        assert bm.backup_state_file(project / "state" / name) is not None
    assert sent == ["PUT"], "one attempt, then the cloud is not asked again in this run"
    target = bm.status()["targets"][0]
    assert target["pending"] == 3 and "Could not connect" in target["last_error"]


def test_conflicting_remote_object_is_never_overwritten_nor_retried(project, state_file,
                                                                    bucket):
    endpoint, name = bucket
    bm = cloud_manager(endpoint, name)
    stub = stubbed(bm)
    stub.add_client_error("put_object", service_error_code="PreconditionFailed",
                          http_status_code=412)
    other = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    stub.add_response("head_object", {"ChecksumSHA256": other, "ContentLength": 5})
    path = bm.backup_state_file(state_file)
    stub.assert_no_pending_responses()
    stub.deactivate()
    (pending,) = bm.outbox.pending("s3")
    assert pending.conflict and pending.name == path.name
    target = bm.status()["targets"][0]
    assert target["conflicts"] == 1 and "other content" in target["last_error"]
    sent = count_requests(bm)
    assert bm.sync().copied == 0 and sent == ["GET"], "sync only lists; conflicts wait"


def test_mirror_gets_every_backup_and_serves_restore(project, state_file):
    mirror = project / "dropbox" / "dalio"
    (project / "dropbox").mkdir()
    bm = BackupManager(mirror_dirs=[mirror])
    path = bm.backup_state_file(state_file)
    assert (mirror / path.name).read_bytes() == path.read_bytes()
    assert (mirror / (path.name + ".sha256")).exists()
    original = state_file.read_bytes()
    shutil.rmtree(project / "backups")
    state_file.unlink()
    result = BackupManager(mirror_dirs=[mirror]).restore(state_file)
    assert result.location.startswith("mirror-")
    assert state_file.read_bytes() == original


def test_unmounted_mirror_is_queued_and_never_fails_backup(project, state_file, caplog):
    mirror = project / "not-mounted" / "dalio"
    bm = BackupManager(mirror_dirs=[mirror])
    assert bm.backup_state_file(state_file).exists()
    assert not mirror.exists(), "a missing parent is a drive not mounted: never created"
    assert "not mounted" in caplog.text
    assert bm.status()["targets"][0]["pending"] == 1
    (project / "not-mounted").mkdir()
    assert bm.sync().copied == 1
    assert list(mirror.glob("last_rebalance_*.json"))
