"""Copies: backups sent to mirror folders and S3 through the outbox; sync."""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import shutil
from datetime import UTC, datetime, timedelta

import boto3

from backup_manager import BackupManager
from backup_manager.copies import Copier
from backup_manager.errors import unreachable
from backup_manager.formats import format_backup_name
from backup_manager.local import LocalStore
from backup_manager.outbox import Outbox
from tests.helpers import (
    cloud_manager,
    count_requests,
    rebalance_doc,
    refused_port,
    remote_keys,
    stubbed,
)


def test_backup_uploads_backup_then_sidecar_with_verified_checksum(project, state_file, bucket):
    endpoint, name = bucket
    bm = cloud_manager(endpoint, name)
    sent = count_requests(bm)
    path = bm.backup_state_file(state_file)
    assert sent == ["PUT"] * 4, "exactly four PUTs (the backup and its restore point, each " \
        "with its sidecar): no HEAD, no LIST, no extra client"
    keys = remote_keys(endpoint, name)
    assert keys == [f"dalio-lite-backups/{path.name}", f"dalio-lite-backups/{path.name}.sha256",
                    "dalio-lite-backups/point-0000000001.json",
                    "dalio-lite-backups/point-0000000001.json.sha256"]
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
    # Three backups of the same bytes: one restore point (the others changed nothing).
    assert result.copied == 4 and result.pending == 0
    assert progress[-1] == (4, 4)
    assert remote_keys(endpoint, name) == sorted(
        f"dalio-lite-backups/{n}{side}" for n in [*made, "point-0000000001.json"]
        for side in ("", ".sha256"))
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
    assert target["pending"] == 6, "three backups and their three restore points wait"
    assert "Could not connect" in target["last_error"]


def test_conflicting_remote_object_is_never_overwritten_nor_retried(project, state_file,
                                                                    bucket):
    endpoint, name = bucket
    bm = cloud_manager(endpoint, name)
    stub = stubbed(bm)
    stub.add_client_error("put_object", service_error_code="PreconditionFailed",
                          http_status_code=412)
    other = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    stub.add_response("head_object", {"ChecksumSHA256": other, "ContentLength": 5})
    stub.add_response("put_object", {})  # the restore point
    stub.add_response("put_object", {})  # and its sidecar
    path = bm.backup_state_file(state_file)
    stub.assert_no_pending_responses()
    stub.deactivate()
    (pending,) = [c for c in bm.outbox.pending("s3") if c.conflict]
    assert pending.name == path.name
    target = bm.status()["targets"][0]
    assert target["conflicts"] == 1 and "other content" in target["last_error"]
    sent = count_requests(bm)
    # The stubbed PUTs of the restore point reached no server: sync sends it for real.
    # The conflicting backup waits: it is never sent again.
    assert bm.sync().copied == 1 and sent == ["GET", "PUT", "PUT"], \
        "sync lists, sends the point and its sidecar; the conflict waits"
    assert [c.name for c in bm.outbox.pending("s3")] == [path.name]


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
    assert bm.status()["targets"][0]["pending"] == 2, "the backup and its restore point"
    (project / "not-mounted").mkdir()
    assert bm.sync().copied == 2
    assert list(mirror.glob("last_rebalance_*.json"))


WHEN = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def plant(folder, data=None, sidecar="right", when=WHEN):
    """A backup of a.json in `folder`; its sidecar is right, wrong or missing."""
    data = data if data is not None else rebalance_doc()
    name = format_backup_name("a", ".json", when)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    if sidecar != "missing":
        digest = hashlib.sha256(data if sidecar == "right" else b"other").hexdigest()
        (folder / (name + ".sha256")).write_text(f"{digest}  {name}\n")
    return name


def owe(project, target, name, queued_at):
    """An outbox entry as the outbox writes it, queued at `queued_at`."""
    entry = project / "backups" / ".outbox" / target / (name + ".json")
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.write_text(json.dumps({"queued_at": queued_at.isoformat(), "attempts": 0,
                                 "last_error": None, "conflict": False}))


def mirrored(project):
    bm = BackupManager(mirror_dirs=[project / "mirror"])
    return bm, next(iter(bm.mirrors))


def test_a_copy_of_a_backup_still_being_written_waits(project):
    bm, target = mirrored(project)
    missing = format_backup_name("a", ".json", WHEN)
    bm.outbox.add(target, missing)
    incomplete = plant(project / "backups", sidecar="missing", when=WHEN + timedelta(seconds=1))
    bm.outbox.add(target, incomplete)
    result = bm.copier.drain()
    assert (result.copied, result.pending, result.errors) == (0, 2, [])
    assert [(c.name, c.attempts) for c in bm.outbox.pending()] == [(missing, 0),
                                                                     (incomplete, 0)]


def test_an_old_copy_of_a_backup_that_never_appeared_is_dropped(project):
    bm, target = mirrored(project)
    gone = format_backup_name("a", ".json", WHEN)
    owe(project, target, gone, datetime.now(UTC) - timedelta(hours=2))
    result = bm.copier.drain()
    assert (result.pending, result.errors) == (0, [])
    assert bm.outbox.pending() == []


def test_an_old_copy_of_an_incomplete_backup_fails_as_damaged(project):
    bm, target = mirrored(project)
    name = plant(project / "backups", sidecar="missing")
    owe(project, target, name, datetime.now(UTC) - timedelta(hours=2))
    result = bm.copier.drain()
    why = f"local backup is damaged: missing sidecar: {name} has no .sha256 (incomplete)"
    assert (result.copied, result.pending) == (0, 1)
    assert result.errors == [f"{project / 'mirror'}/{name}: {why}"]
    (copy,) = bm.outbox.pending()
    assert (copy.attempts, copy.last_error) == (1, why)
    assert not (project / "mirror" / name).exists()


def test_a_damaged_backup_fails_at_once(project):
    bm, target = mirrored(project)
    name = plant(project / "backups", sidecar="wrong")
    bm.outbox.add(target, name)
    result = bm.copier.drain()
    assert result.errors == [f"{project / 'mirror'}/{name}: local backup is damaged: "
                             f"checksum mismatch: {name} does not match its sidecar"]
    assert result.pending == 1


def test_a_backup_that_cannot_be_read_fails_its_copy(tmp_path):
    not_a_folder = tmp_path / "backups"
    not_a_folder.write_text("a file where the backups folder belongs")
    outbox = Outbox(tmp_path / "outbox")
    copier = Copier(LocalStore(not_a_folder), outbox, {"m": LocalStore(tmp_path / "mirror")})
    outbox.add("m", "a_2026-03-01_12-00-00.000000Z.json")
    result = copier.drain()
    unreadable = unreachable(NotADirectoryError(
        errno.ENOTDIR, "Not a directory", str(not_a_folder / "a_2026-03-01_12-00-00.000000Z.json")),
        f"cannot read a_2026-03-01_12-00-00.000000Z.json in {not_a_folder}")
    assert result.errors == [f"{tmp_path / 'mirror'}/a_2026-03-01_12-00-00.000000Z.json: "
                             f"cannot read the local backup: {unreadable}"]
    assert result.pending == 1 and outbox.pending()[0].attempts == 1


def test_sync_goes_on_past_a_target_it_cannot_list_and_says_why(project, state_file):
    made = BackupManager().backup_state_file(state_file).name
    unmounted = project / "nas" / "mirror"
    bm = BackupManager(mirror_dirs=[unmounted, project / "usb"])
    lost, good = bm.mirrors
    result = bm.sync()
    missing = unreachable(FileNotFoundError(
        errno.ENOENT, "the folder's parent is missing (not mounted?)", str(unmounted.parent)),
        f"cannot list {unmounted}")
    assert (result.copied, result.pending) == (2, 0), "the backup and its restore point"
    assert result.errors == [f"{lost}: {missing}"]
    assert (project / "usb" / made).read_bytes() == state_file.read_bytes()


def test_sync_sends_a_sidecar_the_target_lacks(project, state_file):
    bm, _ = mirrored(project)
    made = bm.backup_state_file(state_file).name
    (project / "mirror" / (made + ".sha256")).unlink()
    assert bm.sync().copied == 1
    assert (project / "mirror" / (made + ".sha256")).exists()


def test_sync_reports_a_conflict_with_the_other_errors(project, state_file):
    bm, target = mirrored(project)
    made = bm.backup_state_file(state_file).name
    (project / "mirror" / (made + ".sha256")).unlink()
    (project / "mirror" / made).unlink()
    (project / "mirror" / made).write_bytes(b"other bytes")
    result = bm.sync()
    assert result.errors == [f"{project / 'mirror'}/{made}: {project / 'mirror' / made} "
                             "exists with other content; not overwritten"]
    (copy,) = bm.outbox.pending()
    assert copy.conflict and copy.attempts == 1
