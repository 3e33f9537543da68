"""Off-machine copies: S3 over HTTP against a moto server, mirror folders, the outbox."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import socket
import subprocess
import sys
import threading
import time

import boto3
import pytest
import yaml
from botocore.stub import Stubber

from backup_manager import BackupManager, ConfigError, NoValidBackupError
from tests.helpers import ROOT, Endpoint, rebalance_doc, refused_port

FAST = {"connect_timeout": 0.5, "read_timeout": 0.5}


def cloud_manager(endpoint, bucket, **kw):
    kw.setdefault("s3_client_config", FAST)
    return BackupManager(cloud_enabled=True, s3_bucket=bucket, s3_endpoint_url=endpoint,
                         s3_region="us-east-1", **kw)


def remote_keys(endpoint, bucket):
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", []))


def count_requests(manager, operation="*"):
    """Count HTTP requests the manager's client sends (each retry counts)."""
    sent = []
    manager.cloud.client.meta.events.register(
        f"before-send.s3.{operation}", lambda request, **_: sent.append(request.method))
    return sent


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


def test_one_client_per_manager(project, state_file, bucket):
    endpoint, name = bucket
    bm = cloud_manager(endpoint, name)
    bm.backup_state_file(state_file)
    first = bm.cloud.client
    bm.backup_state_file(state_file)
    assert bm.cloud.client is first


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


@pytest.fixture
def endpoint(moto_server):
    ep = Endpoint()
    boto3.client("s3", endpoint_url=ep.url, region_name="us-east-1").create_bucket(
        Bucket="restartable")
    yield ep
    ep.stop()


def test_server_down_queues_then_drains_without_loss_or_duplicates(project, state_file,
                                                                   endpoint):
    bm = cloud_manager(endpoint.url, "restartable")
    made = [bm.backup_state_file(state_file).name]
    endpoint.stop()
    down = cloud_manager(endpoint.url, "restartable")
    for i in range(3):
        state_file.write_bytes(rebalance_doc(n=i))
        made.append(down.backup_state_file(state_file).name)
    status = down.status()["targets"][0]
    assert status["pending"] == 3 and status["last_error"]
    endpoint.start()
    later = cloud_manager(endpoint.url, "restartable")
    state_file.write_bytes(rebalance_doc(n="after"))
    made.append(later.backup_state_file(state_file).name)
    keys = remote_keys(endpoint.url, "restartable")
    expected = sorted(f"dalio-lite-backups/{n}{s}" for n in made for s in ("", ".sha256"))
    assert keys == expected
    assert later.status()["targets"][0]["pending"] == 0
    assert later.verify(cloud=True).ok


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



@pytest.fixture
def credentials(monkeypatch):
    """Credentials, so a request really goes out (without them boto3 fails before
    sending anything, and an endpoint test would prove nothing)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


def test_refused_endpoint_is_asked_once_per_run(project, state_file, credentials):
    bm = cloud_manager(f"http://127.0.0.1:{refused_port()}", "nowhere")
    sent = count_requests(bm)
    for name in ("a.json", "b.json", "c.json"):
        (project / "state" / name).write_text("{}")
        assert bm.backup_state_file(project / "state" / name) is not None
    assert sent == ["PUT"], "one attempt, then the cloud is not asked again in this run"
    target = bm.status()["targets"][0]
    assert target["pending"] == 3 and "Could not connect" in target["last_error"]


class SilentEndpoint:
    """A TCP server on 127.0.0.1 that accepts connections and never answers: a hung
    S3 endpoint. Its accept loop is bounded: it ends when the test is done, or after
    `lifetime` seconds at the latest, and closes what it accepted."""

    def __init__(self, lifetime=60.0):
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.server.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.accepted = []
        self.stopping = threading.Event()
        self.deadline = time.monotonic() + lifetime
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stopping.is_set() and time.monotonic() < self.deadline:
            try:
                self.accepted.append(self.server.accept()[0])
            except OSError:
                continue

    def close(self):
        self.stopping.set()
        self.thread.join()
        for conn in self.accepted:
            conn.close()
        self.server.close()


@pytest.fixture
def silent_endpoint(credentials):
    endpoint = SilentEndpoint()
    yield endpoint
    endpoint.close()


def test_silent_endpoint_times_out_and_queues(project, state_file, silent_endpoint, caplog):
    bm = cloud_manager(silent_endpoint.url, "hung")
    path = bm.backup_state_file(state_file)
    assert path.exists()
    assert "queued for retry" in caplog.text and "timeout" in caplog.text.lower()
    assert bm.status()["targets"][0]["pending"] == 1


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
    assert target["pending"] == 1 and "timeout" in target["last_error"].lower()
    assert elapsed < 15, f"a hung endpoint held the backup call for {elapsed:.0f} s"


def stubbed(bm):
    stub = Stubber(bm.cloud.client)
    stub.activate()
    return stub


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
    (pending,) = bm.outbox.pending("s3")
    assert pending.name == path.name and expected in pending.last_error
    stub.deactivate()
    assert bm.sync().copied == 1


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


def test_412_with_equal_checksum_counts_as_done(project, state_file, bucket):
    endpoint, name = bucket
    bm = cloud_manager(endpoint, name)
    path = bm.backup_state_file(state_file)
    bm.outbox.add("s3", path.name)
    assert bm.sync().copied == 1
    assert bm.outbox.pending() == []


def test_prune_keeps_backups_waiting_for_upload(project, state_file):
    bm = cloud_manager(f"http://127.0.0.1:{refused_port()}", "nowhere", keep_last=1,
                       keep_daily=0)
    made = []
    for i in range(4):
        state_file.write_bytes(rebalance_doc(n=i))
        made.append(bm.backup_state_file(state_file))
    assert all(p.exists() for p in made)
    plan = bm.prune(dry_run=True)
    assert {d.reason for d in plan if d.name == made[0].name} == {"waiting for upload"}


def test_missing_boto3_names_what_to_install(project, state_file, monkeypatch):
    for module in ("boto3", "botocore", "botocore.exceptions", "botocore.config"):
        monkeypatch.setitem(sys.modules, module, None)
    bm = BackupManager(cloud_enabled=True, s3_bucket="b")
    assert bm.backup_state_file(state_file).exists()
    error = bm.status()["targets"][0]["last_error"]
    assert "pip install 'daliolite[s3]'" in error
    state_file.unlink()
    assert bm.restore_from_backup(state_file), "local restore needs no boto3"
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


# --- DalioLite with the cloud -------------------------------------------------------------


def cloud_home(tmp_path, endpoint, bucket, **extra):
    home = tmp_path / "bot"
    home.mkdir(exist_ok=True)
    doc = yaml.safe_load((ROOT / "config.yaml").read_text())
    doc["backup"].update(cloud_enabled=True, s3_bucket=bucket, s3_endpoint_url=endpoint,
                         s3_region="us-east-1", **extra)
    (home / "config.yaml").write_text(yaml.safe_dump(doc))
    return home


def run_bot(home):
    return subprocess.run([sys.executable, str(ROOT / "dalio_lite.py"), "--config",
                           str(home / "config.yaml")], capture_output=True, text=True,
                          timeout=120)


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


def test_unreachable_cloud_with_valid_local_state_runs(tmp_path, bucket):
    endpoint, name = bucket
    home = cloud_home(tmp_path, endpoint, name)
    assert run_bot(home).returncode == 0
    doc = yaml.safe_load((home / "config.yaml").read_text())
    doc["backup"]["s3_endpoint_url"] = f"http://127.0.0.1:{refused_port()}"
    (home / "config.yaml").write_text(yaml.safe_dump(doc))
    again = run_bot(home)
    assert again.returncode == 0, again.stderr
    assert f"cannot list s3://{name}" in again.stderr, "cloud trouble is never silent"
    assert list((home / "backups" / ".outbox" / "s3").glob("*.json")), "the copies wait"
    status = json.loads((home / "state" / "autopilot_status.json").read_text())
    assert status["outcome"] == "no_action"


# --- mirror folders -----------------------------------------------------------------------


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


def test_mirror_follows_retention(project, state_file):
    mirror = project / "mirror"
    bm = BackupManager(mirror_dirs=[mirror], keep_last=2, keep_daily=0)
    for i in range(5):
        state_file.write_bytes(rebalance_doc(n=i))
        bm.backup_state_file(state_file)
    local = sorted(p.name for p in (project / "backups").glob("last_rebalance_*"))
    # Each store is pruned from its own listing; the copy lands after the local
    # prune, so the mirror may hold one more until the next backup prunes it.
    in_mirror = sorted(p.name for p in mirror.glob("last_rebalance_*"))
    assert len(local) == 4 and set(local) <= set(in_mirror) and len(in_mirror) <= 6
    bm.prune()
    assert sorted(p.name for p in mirror.glob("last_rebalance_*")) == local


def test_verify_covers_mirrors(project, state_file):
    mirror = project / "mirror"
    bm = BackupManager(mirror_dirs=[mirror])
    path = bm.backup_state_file(state_file)
    (mirror / path.name).write_bytes(b"{}")
    problems = bm.verify().problems
    assert [(p.location, p.status) for p in problems] == [(str(mirror), "checksum mismatch")]


def test_cloud_source_needs_cloud_config(project):
    with pytest.raises(ConfigError, match="cloud_enabled"):
        BackupManager().restore("state/last_rebalance.json", source="cloud")


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


def test_s3_timeouts_and_attempts_come_from_config(tmp_path):
    section = {"cloud_enabled": True, "s3_bucket": "b", "s3_region": "us-east-1",
               "s3_endpoint_url": f"http://127.0.0.1:{refused_port()}",
               "s3_connect_timeout_seconds": 4, "s3_read_timeout_seconds": 7.5,
               "s3_max_attempts": 3}
    bm = BackupManager.from_config({"backup": section}, base_dir=tmp_path)
    config = bm.cloud.client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (4, 7.5)
    assert config.retries["total_max_attempts"] == 3
