"""The writer id: made once, kept, never a backup."""

from __future__ import annotations

import multiprocessing
import re
import shutil

import pytest

from backup_manager import BackupManager, StorageError, writer_id
from backup_manager.writer import known_writer_id


def test_writer_id_is_made_once_and_kept(tmp_path):
    first = writer_id(tmp_path / "backups")
    assert re.fullmatch(r"[0-9a-f]{12}", first)
    assert writer_id(tmp_path / "backups") == first
    assert (tmp_path / "backups" / ".writer").stat().st_mode & 0o777 == 0o600


def test_two_folders_get_two_ids(tmp_path):
    assert writer_id(tmp_path / "a") != writer_id(tmp_path / "b")


def _make(folder, queue):
    queue.put(writer_id(folder))


def test_processes_racing_for_the_first_id_all_get_the_same_one(tmp_path):
    queue = multiprocessing.get_context("spawn").Queue()
    procs = [multiprocessing.get_context("spawn").Process(
        target=_make, args=(tmp_path / "backups", queue)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    ids = {queue.get(timeout=5) for _ in procs}
    assert len(ids) == 1
    assert ids == {writer_id(tmp_path / "backups")}


def test_a_damaged_writer_file_is_an_error_naming_it(tmp_path):
    (tmp_path / ".writer").write_text("not an id\n")
    with pytest.raises(StorageError, match=r"\.writer does not hold a writer id"):
        writer_id(tmp_path)


def test_the_writer_file_is_no_backup(tmp_path, state_file):
    writer_id(tmp_path / "backups")
    bm = BackupManager(tmp_path / "backups")
    bm.backup_state_file(state_file)
    assert bm.backed_up_files() == ["last_rebalance.json"]
    assert bm.verify().ok


def test_a_copied_folder_becomes_a_writer_of_its_own_and_keeps_the_copied_id(tmp_path):
    original = writer_id(tmp_path / "a" / "backups")
    shutil.copytree(tmp_path / "a", tmp_path / "clone")
    assert known_writer_id(tmp_path / "clone" / "backups") is None  # never wrote there
    copy = writer_id(tmp_path / "clone" / "backups")
    assert copy != original
    kept = tmp_path / "clone" / "backups" / f".writer.copied-{original}"
    assert kept.read_text().splitlines()[0] == original
    assert writer_id(tmp_path / "clone" / "backups") == copy
    assert writer_id(tmp_path / "a" / "backups") == original  # the original is untouched


def test_an_id_from_before_folders_were_recorded_is_kept_and_recorded(tmp_path):
    folder = tmp_path / "backups"
    folder.mkdir()
    (folder / ".writer").write_text("0123456789ab\n")
    assert known_writer_id(folder) == "0123456789ab"
    assert writer_id(folder) == "0123456789ab"
    assert len((folder / ".writer").read_text().splitlines()) == 2
    shutil.copytree(folder, tmp_path / "clone")  # recorded now: a copy is caught
    assert known_writer_id(tmp_path / "clone") is None
