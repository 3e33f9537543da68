"""Atomic writes and the inter-process lock."""

from __future__ import annotations

import multiprocessing
import os
import time

import pytest

from backup_manager import LockTimeout, atomic_write, file_lock
from backup_manager.atomic import publish_new, write_temp


def test_atomic_write_replaces_and_keeps_mode(tmp_path):
    target = tmp_path / "s.json"
    target.write_bytes(b"old")
    target.chmod(0o640)
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o640
    assert os.listdir(tmp_path) == ["s.json"], "no temp file left behind"


def test_atomic_write_new_file_is_private(tmp_path):
    atomic_write(tmp_path / "new.json", b"{}")
    assert (tmp_path / "new.json").stat().st_mode & 0o777 == 0o600


def test_failed_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "s.json"
    target.write_bytes(b"old")

    def disk_full(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(OSError, match="No space"):
        atomic_write(target, b"new" * 1000)
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["s.json"]


def test_temp_name_symlink_is_not_written_through(tmp_path, monkeypatch):
    outside = tmp_path / "outside"
    outside.write_bytes(b"precious")
    # A temp name ends in 4 random bytes, in hex: the first try gets deaddead (taken by
    # a symlink), the second deadbeef.
    tokens = iter([bytes.fromhex("deaddead"), bytes.fromhex("deadbeef")])
    urandom = os.urandom
    monkeypatch.setattr(os, "urandom", lambda n: next(tokens) if n == 4 else urandom(n))
    (tmp_path / ".s.json.tmp-deaddead").symlink_to(outside)
    tmp = write_temp(tmp_path, "s.json", b"data")
    assert tmp.endswith(".tmp-deadbeef")
    assert outside.read_bytes() == b"precious"


def test_publish_new_refuses_existing_names_and_symlinks(tmp_path):
    tmp = write_temp(tmp_path, "x", b"data")
    (tmp_path / "x").symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsError):
        publish_new(tmp, str(tmp_path / "x"))
    assert os.path.exists(tmp), "the temp file is kept for a retry under another name"


def _hold(path, seconds, ready):
    with file_lock(path, 5):
        ready.set()
        time.sleep(seconds)


def test_lock_times_out_with_clear_error(tmp_path):
    ready = multiprocessing.Event()
    holder = multiprocessing.Process(target=_hold, args=(tmp_path / ".lock", 60, ready))
    holder.start()
    try:
        assert ready.wait(10)
        with pytest.raises(LockTimeout, match=f"held by another process \\(PID {holder.pid}"):
            with file_lock(tmp_path / ".lock", 0.2):
                pass
    finally:
        holder.kill()  # the test is done once the wait timed out: no need to wait it out
        holder.join()


def test_lock_is_released_when_holder_is_killed(tmp_path):
    ready = multiprocessing.Event()
    holder = multiprocessing.Process(target=_hold, args=(tmp_path / ".lock", 60, ready))
    holder.start()
    assert ready.wait(10)
    holder.kill()
    holder.join()
    with file_lock(tmp_path / ".lock", 2):
        pass
