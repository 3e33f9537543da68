"""Promises 1 and 2, as the kernel sees them: when backup_state_file or restore returns,
the new bytes were fsync'd under their temp name, renamed (or linked) into place, and
then the folder holding the new name was fsync'd. Every real fsync call is recorded
with the path of its descriptor (a file or a folder), every rename or link with its
destination, and each is passed on to the real call."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest

from backup_manager import BackupManager
from tests.helpers import rebalance_doc

WHEN = datetime(2026, 2, 17, 10, 30, tzinfo=UTC)


@pytest.fixture
def disk_calls(monkeypatch):
    """[(op, path)] in call order: ("fsync", path of the fd) and ("name", destination)
    for os.replace, os.rename and os.link."""
    calls = []
    real_fsync = os.fsync

    def fsync(fd):
        number = fd if isinstance(fd, int) else fd.fileno()
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{number}")))
        return real_fsync(fd)

    def naming(real):
        def wrapper(src, dst, *args, **kwargs):
            result = real(src, dst, *args, **kwargs)
            calls.append(("name", os.path.realpath(dst)))
            return result
        return wrapper

    monkeypatch.setattr(os, "fsync", fsync)
    for name in ("replace", "rename", "link"):
        monkeypatch.setattr(os, name, naming(getattr(os, name)))
    return calls


def temp_of(final):
    """Temp names are "." + final name + ".tmp-" + token, in the final folder."""
    folder, name = os.path.split(os.path.realpath(final))
    prefix = f".{name}.tmp-"
    return lambda path: os.path.dirname(path) == folder and \
        os.path.basename(path).startswith(prefix)


def same_path(want):
    real = os.path.realpath(want)
    return lambda path: path == real


def in_order(calls, *steps):
    """Each step (op, path or predicate) found after the previous one; fails showing
    every call."""
    at = -1
    for op, want in steps:
        match = want if callable(want) else same_path(want)
        at = next((i for i, (o, p) in enumerate(calls) if i > at and o == op and match(p)),
                  None)
        if at is None:
            shown = "\n  ".join(f"{o} {p}" for o, p in calls)
            pytest.fail(f"no {op} of {want} in the right place; calls:\n  {shown}")


def test_backup_fsyncs_its_bytes_then_its_sidecar_then_the_folder(state_file, project,
                                                                  disk_calls):
    bm = BackupManager(clock=lambda: WHEN)
    path = bm.backup_state_file(state_file)
    sidecar = path.with_name(path.name + ".sha256")
    in_order(disk_calls,
             ("fsync", temp_of(path)), ("name", path),
             ("fsync", temp_of(sidecar)), ("name", sidecar),
             ("fsync", project / "backups"))
    assert path.read_bytes() == state_file.read_bytes()


def test_restore_fsyncs_the_state_file_then_the_state_folder(state_file, project,
                                                             disk_calls):
    bm = BackupManager()
    original = state_file.read_bytes()
    bm.backup_state_file(state_file)
    state_file.unlink()
    disk_calls.clear()
    bm.restore(state_file)
    in_order(disk_calls,
             ("fsync", temp_of(state_file)), ("name", state_file),
             ("fsync", project / "state"))
    assert state_file.read_bytes() == original


def test_restore_makes_the_replaced_file_durable_before_replacing_it(state_file, project,
                                                                     disk_calls):
    bm = BackupManager()
    bm.backup_state_file(state_file)
    replaced = rebalance_doc(n="valid, never backed up")
    state_file.write_bytes(replaced)
    disk_calls.clear()
    result = bm.restore(state_file)
    kept = project / "backups" / result.kept_as
    kept_sidecar = kept.with_name(kept.name + ".sha256")
    assert kept.parent == project / "backups" / "replaced"
    in_order(disk_calls,
             ("fsync", project / "backups"),  # the new replaced/ folder's own name
             ("fsync", temp_of(kept)), ("name", kept),
             ("fsync", temp_of(kept_sidecar)), ("name", kept_sidecar),
             ("fsync", kept.parent),
             ("fsync", temp_of(state_file)), ("name", state_file),
             ("fsync", project / "state"))
    assert kept.read_bytes() == replaced


def test_durable_false_skips_every_fsync(state_file, disk_calls):
    bm = BackupManager(durable=False)
    bm.backup_state_file(state_file)
    state_file.unlink()
    assert bm.restore_from_backup(state_file)
    assert [p for op, p in disk_calls if op == "fsync"] == [], \
        "durable: false is the user's choice of speed over durability"
