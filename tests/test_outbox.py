"""The outbox: copies owed to mirrors and S3 wait in a durable queue and drain later."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

import pytest
import yaml

from backup_manager.outbox import Outbox, PendingCopy
from tests.helpers import (
    cloud_home,
    cloud_manager,
    rebalance_doc,
    refused_port,
    remote_keys,
    run_bot,
)


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
    assert status["pending"] == 6 and status["last_error"], "3 backups and their 3 points"
    endpoint.start()
    later = cloud_manager(endpoint.url, "restartable")
    state_file.write_bytes(rebalance_doc(n="after"))
    made.append(later.backup_state_file(state_file).name)
    keys = remote_keys(endpoint.url, "restartable")
    points = [f"point-{n:010d}.json" for n in range(1, 6)]
    expected = sorted(f"dalio-lite-backups/{n}{s}" for n in made + points
                      for s in ("", ".sha256"))
    assert keys == expected
    assert later.status()["targets"][0]["pending"] == 0
    assert later.verify(cloud=True).ok


def test_silent_endpoint_times_out_and_queues(project, state_file, silent_endpoint, caplog):
    bm = cloud_manager(silent_endpoint.url, "hung")
    path = bm.backup_state_file(state_file)
    assert path.exists()
    assert "queued for retry" in caplog.text and "timeout" in caplog.text.lower()
    assert bm.status()["targets"][0]["pending"] == 2, "the backup and its restore point"


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


def test_the_queue_outlives_its_process_and_forgets_only_what_is_done(tmp_path):
    box = Outbox(tmp_path / ".outbox")
    for target, name in (("s3", "a.json"), ("s3", "b.json"), ("mirror-1", "a.json")):
        box.add(target, name)
    (first,) = [c for c in box.pending("s3") if c.name == "a.json"]
    box.failed(first, "timeout")
    box.add("s3", "a.json")  # owed again: the entry is kept as it is
    (second,) = [c for c in box.pending("s3") if c.name == "b.json"]
    box.failed(second, "other content", conflict=True)

    again = Outbox(tmp_path / ".outbox")  # what the next run sees
    owed = {(c.target, c.name): c for c in again.pending()}
    assert sorted(owed) == [("mirror-1", "a.json"), ("s3", "a.json"), ("s3", "b.json")]
    assert (owed["s3", "a.json"].attempts, owed["s3", "a.json"].last_error) == (1, "timeout")
    assert owed["s3", "a.json"].queued_at == first.queued_at, "its age is kept"
    assert owed["s3", "b.json"].conflict and not owed["s3", "a.json"].conflict
    assert (owed["mirror-1", "a.json"].attempts, owed["mirror-1", "a.json"].last_error) == (
        0, None)
    assert again.last_success("s3") is None
    again.done("s3", "a.json")
    assert [c.name for c in again.pending("s3")] == ["b.json"]
    assert [c.name for c in again.pending("mirror-1")] == ["a.json"], "done for one target"
    assert again.last_success("s3") is not None and again.last_success("mirror-1") is None


def test_a_damaged_entry_is_still_owed(tmp_path):
    box = Outbox(tmp_path / ".outbox")
    box.add("s3", "a.json")
    # One small JSON file per copy owed, under .outbox/{target}/ (outbox.py).
    (entry,) = (tmp_path / ".outbox" / "s3").iterdir()
    entry.write_bytes(b"{torn")
    (owed,) = box.pending("s3")
    assert owed.name == "a.json" and owed.last_error == "outbox entry was unreadable"


def test_an_entry_records_when_it_was_queued_and_each_failure(tmp_path):
    outbox = Outbox(tmp_path / ".outbox")
    before = datetime.now(UTC)
    outbox.add("s3", "a_1.json")
    (copy,) = outbox.pending()
    assert before <= copy.queued_at <= datetime.now(UTC)
    assert copy == PendingCopy("s3", "a_1.json", copy.queued_at, 0, None, False)
    outbox.failed(copy, "connection refused")
    (copy,) = outbox.pending()
    assert (copy.attempts, copy.last_error, copy.conflict) == (1, "connection refused", False)
    outbox.failed(copy, "other bytes there", conflict=True)
    (again,) = outbox.pending()
    assert (again.queued_at, again.attempts, again.last_error, again.conflict) == (
        copy.queued_at, 2, "other bytes there", True)
    outbox.add("s3", "a_1.json")
    assert outbox.pending() == [again], "adding an owed copy again keeps its entry as it is"


def test_entries_are_private(tmp_path):
    outbox = Outbox(tmp_path / ".outbox")
    outbox.add("s3", "a_1.json")
    assert (tmp_path / ".outbox" / "s3").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / ".outbox" / "s3" / "a_1.json.json").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("durable", [True, False])
def test_entries_are_fsynced_only_when_durable(tmp_path, monkeypatch, durable):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    outbox = Outbox(tmp_path / ".outbox", durable=durable)
    outbox.add("s3", "a_1.json")
    (copy,) = outbox.pending()
    outbox.failed(copy, "boom")
    assert bool(synced) is durable


def test_an_entry_written_with_only_its_time_is_a_fresh_copy(tmp_path):
    (tmp_path / "s3").mkdir()
    (tmp_path / "s3" / "a_1.json.json").write_text('{"queued_at": "2026-03-01T12:00:00+00:00"}')
    assert Outbox(tmp_path).pending() == [PendingCopy(
        "s3", "a_1.json", datetime(2026, 3, 1, 12, tzinfo=UTC), 0, None, False)]


def test_the_last_success_is_an_aware_utc_time(tmp_path):
    outbox = Outbox(tmp_path)
    assert outbox.last_success("s3") is None
    outbox.add("s3", "a_1.json")
    outbox.done("s3", "a_1.json")
    done = outbox.last_success("s3")
    assert done.tzinfo is UTC and abs((datetime.now(UTC) - done).total_seconds()) < 60
    assert outbox.pending() == []
