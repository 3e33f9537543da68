"""verify: every backup each store holds is checked, and each problem named."""

from __future__ import annotations

import errno
import os
import time
from datetime import UTC, datetime, timedelta

from backup_manager import BackupManager, CloudError, StateKey
from backup_manager.errors import unreachable
from backup_manager.formats import format_backup_name
from backup_manager.local import LocalStore
from backup_manager.verify import VerifyReport, verify_stores, verify_uploaded
from tests.helpers import flip_bit, plant, rebalance_doc

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_verify_names_each_problem(state_file, project):
    bm = BackupManager()
    paths = []
    for i in range(4):
        state_file.write_bytes(rebalance_doc(n=i))
        paths.append(bm.backup_state_file(state_file))
    flip_bit(paths[0])
    paths[1].with_name(paths[1].name + ".sha256").write_bytes(b"junk")
    paths[2].unlink()
    report = bm.verify()
    statuses = {i.name: i.status for i in report.items}
    assert statuses[paths[0].name] == "checksum mismatch"
    assert statuses[paths[1].name] == "malformed sidecar"
    assert statuses[paths[2].name + ".sha256"] == "orphan sidecar"
    assert statuses[paths[3].name] == "ok"
    assert not report.ok


def test_verify_flags_stale_incomplete_but_not_in_progress(state_file, project):
    bm = BackupManager()
    path = bm.backup_state_file(state_file)
    path.with_name(path.name + ".sha256").unlink()
    assert bm.verify().ok, "a fresh backup without sidecar may still be being written"
    old = time.time() - 7200
    os.utime(path, (old, old))
    bm.folder.clock = lambda: datetime.now(UTC) + timedelta(hours=2)
    assert [i.status for i in bm.verify().problems] == ["missing sidecar"]


def test_verify_covers_mirrors(project, state_file):
    mirror = project / "mirror"
    bm = BackupManager(mirror_dirs=[mirror])
    path = bm.backup_state_file(state_file)
    (mirror / path.name).write_bytes(b"{}")
    problems = bm.verify().problems
    assert [(p.location, p.status) for p in problems] == [(str(mirror), "checksum mismatch")]


def items(report):
    return [tuple(i) for i in report.items]


def test_verify_reports_each_store_and_goes_on_past_one_it_cannot_list(project):
    unmounted = project / "nas" / "mirror"
    good = project / "usb"
    bm = BackupManager(mirror_dirs=[unmounted, good], clock=lambda: NOW)
    (project / "state" / "a.json").write_text("{}")
    name = bm.backup_state_file(project / "state" / "a.json").name
    missing = unreachable(FileNotFoundError(
        errno.ENOENT, "the folder's parent is missing (not mounted?)", str(unmounted.parent)),
        f"cannot list {unmounted}")
    assert items(bm.verify()) == [("backups", name, "ok", ""),
                                  (str(unmounted), "", "unreachable", str(missing)),
                                  (str(good), name, "ok", "")]


def test_verify_names_invalid_content_and_orphan_sidecars(project):
    backups = project / "backups"
    invalid = plant(backups, "a", NOW, data=b"[1]")
    mismatch = plant(backups, "a", NOW - timedelta(hours=1))
    (backups / mismatch).write_bytes(b"{}")
    malformed = plant(backups, "a", NOW - timedelta(hours=2))
    (backups / (malformed + ".sha256")).write_text("junk")
    orphan = plant(backups, "a", NOW - timedelta(days=1))
    (backups / orphan).unlink()
    report = BackupManager(clock=lambda: NOW).verify()
    assert items(report) == [
        ("backups", invalid, "invalid content", "a.json: JSON must be an object, got list"),
        ("backups", mismatch, "checksum mismatch", f"{mismatch} does not match its sidecar"),
        ("backups", malformed, "malformed sidecar",
         "sidecar is empty or not in 'sha256  name' form"),
        ("backups", orphan + ".sha256", "orphan sidecar", "its backup is missing")]


def test_verify_names_a_backup_stamped_ahead_of_the_clock_and_how_to_move_it(project):
    backups = project / "backups"
    ahead = plant(backups, "a", NOW + timedelta(hours=1))
    at_the_limit = plant(backups, "a", NOW + timedelta(minutes=5))
    report = BackupManager(clock=lambda: NOW).verify()
    hint = (f"the clock was ahead when it was made, or is behind now; if the clock is right, "
            f"move it aside: mv backups/{ahead} backups/{ahead}.sha256 backups/corrupt/")
    assert items(report) == [("backups", ahead, "stamped in the future", hint),
                             ("backups", at_the_limit, "ok", "")]


def test_verify_names_symlinks_where_backups_belong_for_the_files_asked_about(project):
    backups = project / "backups"
    kept = plant(backups, "a", NOW - timedelta(days=1))
    stray_a = format_backup_name("a", ".json", NOW)
    stray_b = format_backup_name("b", ".json", NOW)
    for stray in (stray_a, stray_b):
        (backups / stray).symlink_to(backups / kept)
    bm = BackupManager(clock=lambda: NOW)
    why = "a symlink or folder where a backup belongs"
    assert items(bm.verify("state/a.json")) == [
        ("backups", kept, "ok", ""), ("backups", stray_a, "not a regular file", why)]
    assert sorted(items(bm.verify())) == sorted([
        ("backups", kept, "ok", ""), ("backups", stray_a, "not a regular file", why),
        ("backups", stray_b, "not a regular file", why)])


def test_an_incomplete_backup_is_in_progress_for_exactly_the_grace_period(project):
    backups = project / "backups"
    limit = NOW - timedelta(hours=1)
    at_the_limit = plant(backups, "a", limit, sidecar=False)
    os.utime(backups / at_the_limit, ns=(int(limit.timestamp()) * 10**9,) * 2)
    old_name = plant(backups, "a", NOW - timedelta(days=1), sidecar=False)  # mtime: now
    report = BackupManager(clock=lambda: NOW).verify()
    assert items(report) == [
        ("backups", at_the_limit, "in progress", f"{at_the_limit} has no .sha256 (incomplete)"),
        ("backups", old_name, "missing sidecar", f"{old_name} has no .sha256 (incomplete)")]


class FailingReads(LocalStore):
    """A store that lists its backups but cannot read any (an S3 that errs)."""

    @property
    def label(self):
        return "s3://flaky/prefix"

    def read(self, name, *, max_bytes=None):
        raise CloudError("read timed out")


def test_verify_names_a_backup_that_cannot_be_read(project):
    name = plant(project / "cloud", "a", NOW)
    bm = BackupManager(clock=lambda: NOW)
    report = verify_stores(bm.folder, [FailingReads(project / "cloud")], None)
    assert items(report) == [("s3://flaky/prefix", name, "unreadable", "read timed out")]


def test_verify_of_the_cloud_tells_pending_uploads_from_missing_ones(project):
    backups, remote = project / "backups", LocalStore(project / "remote")
    pending = plant(backups, "a", NOW)
    missing = plant(backups, "a", NOW - timedelta(days=1))
    plant(backups, "b", NOW)
    bm = BackupManager(clock=lambda: NOW)
    bm.outbox.add("s3", pending)
    bm.outbox.add("mirror-1", missing)  # owed to another target: not an upload in progress
    report = VerifyReport()
    verify_uploaded(bm.folder, remote, "s3", [StateKey("a", ".json")], report)
    why = "local backup has no copy in the cloud"
    assert items(report) == [(remote.label, pending, "upload pending", why),
                             (remote.label, missing, "not uploaded", why)]
