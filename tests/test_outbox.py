"""The outbox: one small JSON file per copy owed, written before the copy starts."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest

from backup_manager.outbox import Outbox, PendingCopy


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


def test_a_damaged_entry_is_still_owed(tmp_path):
    (tmp_path / "s3").mkdir()
    entry = tmp_path / "s3" / "a_1.json.json"
    entry.write_text("{not json")
    mtime = datetime.fromtimestamp(entry.stat().st_mtime, UTC)
    assert Outbox(tmp_path).pending() == [PendingCopy(
        "s3", "a_1.json", mtime, 0, "outbox entry was unreadable", False)]


def test_the_last_success_is_an_aware_utc_time(tmp_path):
    outbox = Outbox(tmp_path)
    assert outbox.last_success("s3") is None
    outbox.add("s3", "a_1.json")
    outbox.done("s3", "a_1.json")
    done = outbox.last_success("s3")
    assert done.tzinfo is UTC and abs((datetime.now(UTC) - done).total_seconds()) < 60
    assert outbox.pending() == []
