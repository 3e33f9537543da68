"""Copies to mirrors through the outbox: what is sent, what waits, what is dropped, and
what a sync reports."""

from __future__ import annotations

import errno
import hashlib
import json
from datetime import UTC, datetime, timedelta

from backup_manager import BackupManager
from backup_manager.copies import Copier
from backup_manager.formats import format_backup_name
from backup_manager.local import LocalStore
from backup_manager.outbox import Outbox
from tests.helpers import rebalance_doc

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
    unreadable = NotADirectoryError(errno.ENOTDIR, "Not a directory",
                                    str(not_a_folder / "a_2026-03-01_12-00-00.000000Z.json"))
    assert result.errors == [f"{tmp_path / 'mirror'}/a_2026-03-01_12-00-00.000000Z.json: "
                             f"cannot read the local backup: {unreadable}"]
    assert result.pending == 1 and outbox.pending()[0].attempts == 1


def test_sync_goes_on_past_a_target_it_cannot_list_and_says_why(project, state_file):
    made = BackupManager().backup_state_file(state_file).name
    unmounted = project / "nas" / "mirror"
    bm = BackupManager(mirror_dirs=[unmounted, project / "usb"])
    lost, good = bm.mirrors
    result = bm.sync()
    missing = FileNotFoundError(errno.ENOENT, "the folder's parent is missing (not mounted?)",
                                str(unmounted.parent))
    assert (result.copied, result.pending) == (1, 0)
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
