"""Health: what verify reports for each file, the facts status gives, and the lines
status prints as problems."""

from __future__ import annotations

import errno
import hashlib
import os
from datetime import UTC, datetime, timedelta

import pytest

from backup_manager import BackupManager, CloudError, StateKey
from backup_manager.formats import format_backup_name
from backup_manager.health import VerifyReport, age, status_problems, verify_stores, verify_uploaded
from backup_manager.local import LocalStore
from tests.helpers import rebalance_doc

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def plant(folder, stem, when, data=None, sidecar=True):
    """A backup of `stem`.json taken at `when` in `folder`, with its sidecar unless not."""
    data = data if data is not None else rebalance_doc(n=str(when))
    name = format_backup_name(stem, ".json", when)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    if sidecar:
        (folder / (name + ".sha256")).write_text(
            f"{hashlib.sha256(data).hexdigest()}  {name}\n")
    return name


def items(report):
    return [tuple(i) for i in report.items]


# --- verify ---------------------------------------------------------------------------------

def test_verify_reports_each_store_and_goes_on_past_one_it_cannot_list(project):
    unmounted = project / "nas" / "mirror"
    good = project / "usb"
    bm = BackupManager(mirror_dirs=[unmounted, good], clock=lambda: NOW)
    (project / "state" / "a.json").write_text("{}")
    name = bm.backup_state_file(project / "state" / "a.json").name
    missing = FileNotFoundError(errno.ENOENT, "the folder's parent is missing (not mounted?)",
                                str(unmounted.parent))
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


# --- status facts ---------------------------------------------------------------------

def test_status_gives_the_newest_valid_backup_of_each_configured_file(project):
    bm = BackupManager(state_files=["state/last_rebalance.json", "state/other.json"],
                       clock=lambda: NOW)
    (project / "state" / "last_rebalance.json").write_bytes(rebalance_doc())
    name = bm.backup_state_file("state/last_rebalance.json").name
    bm.folder.clock = lambda: NOW + timedelta(seconds=90)
    backups = project / "backups"
    disk = sum(p.stat().st_size for p in backups.iterdir() if p.is_file())
    assert (backups / ".lock").stat().st_size == 0
    assert bm.status() == {
        "backup_dir": "backups",
        "disk_bytes": disk,
        "state_files": [
            {"stamped_in_future": [], "state_file": "last_rebalance.json", "backups": 1,
             "complete": 1, "newest_valid": name, "newest_valid_time": NOW.isoformat(),
             "newest_valid_age_seconds": 90.0},
            {"stamped_in_future": [], "state_file": "other.json", "backups": 0,
             "complete": 0, "newest_valid": None, "newest_valid_time": None,
             "newest_valid_age_seconds": None}],
        "targets": [],
    }


def test_status_without_configured_files_covers_every_file_with_backups(project):
    for stem in ("b", "a"):
        plant(project / "backups", stem, NOW)
    facts = BackupManager(clock=lambda: NOW).status()
    assert [s["state_file"] for s in facts["state_files"]] == ["a.json", "b.json"]
    assert all(s["newest_valid"] for s in facts["state_files"])


def test_status_lists_backups_stamped_beyond_the_clock_skew(project):
    backups = project / "backups"
    ahead = plant(backups, "a", NOW + timedelta(hours=1))
    plant(backups, "a", NOW + timedelta(minutes=5))
    plant(backups, "a", NOW)
    (facts,) = BackupManager(clock=lambda: NOW).status()["state_files"]
    assert facts["stamped_in_future"] == [ahead]


def test_status_gives_each_copy_target_its_queue(project):
    nas = project / "nas"
    mirror = nas / "mirror"
    bm = BackupManager(state_files=["state/a.json"], mirror_dirs=[mirror])
    (project / "state" / "a.json").write_text("{}")
    bm.backup_state_file("state/a.json")
    (target,) = bm.status()["targets"]
    assert (target["target"], target["pending"], target["conflicts"], target["last_success"]) \
        == (str(mirror), 1, 0, None)
    assert 0 <= target["oldest_pending_age_seconds"] < 60
    assert "not mounted" in target["last_error"]
    nas.mkdir()
    assert bm.sync().copied == 1
    (target,) = bm.status()["targets"]
    assert (target["pending"], target["oldest_pending_age_seconds"], target["last_error"]) == (
        0, None, None)
    done = datetime.fromisoformat(target["last_success"])
    assert abs(datetime.now(UTC) - done) < timedelta(minutes=1)


# --- status problems ----------------------------------------------------------------------

FACTS = {
    "state_files": [
        {"state_file": "x.json", "stamped_in_future": ["x_2099-01-01_00-00-00.000000Z.json"],
         "newest_valid": "x_2026-03-01_10-00-00.000000Z.json",
         "newest_valid_age_seconds": 7200.0},
        {"state_file": "y.json", "stamped_in_future": [], "newest_valid": None,
         "newest_valid_age_seconds": None},
        {"state_file": "z.json", "stamped_in_future": [],
         "newest_valid": "z_2026-03-01_11-00-00.000000Z.json",
         "newest_valid_age_seconds": 3600.0},
    ],
    "targets": [
        {"target": "s3://bucket/prefix", "conflicts": 2, "oldest_pending_age_seconds": 7200.0},
        {"target": "/mnt/nas", "conflicts": 0, "oldest_pending_age_seconds": 3600.0},
        {"target": "/mnt/usb", "conflicts": 0, "oldest_pending_age_seconds": None},
    ],
}
FUTURE = ("x_2099-01-01_00-00-00.000000Z.json is stamped in the future: the clock was ahead "
          "when it was made, or is behind now; run verify for the command that moves it aside")


def test_status_problems_with_a_maximum_age():
    # z.json and /mnt/nas are exactly one hour old: not over the limit.
    assert status_problems(FACTS, max_age_hours=1) == [
        FUTURE, "x.json: newest valid backup is 2.0h old", "y.json has no valid backup",
        "2 conflicting copy(ies) to s3://bucket/prefix",
        "copies to s3://bucket/prefix pending for 2.0h"]


def test_status_problems_without_a_maximum_age():
    assert status_problems(FACTS) == [FUTURE, "y.json has no valid backup",
                                      "2 conflicting copy(ies) to s3://bucket/prefix"]


def test_status_problems_of_a_folder_with_nothing_in_it():
    assert status_problems({"state_files": [], "targets": []}) == [
        "no state files configured and no backups found"]
    assert status_problems({"state_files": FACTS["state_files"][2:], "targets": []}) == []


@pytest.mark.parametrize("seconds,text", [
    (None, "-"), (0, "0s"), (45, "45s"), (119, "119s"), (120, "2.0m"), (750, "12.5m"),
    (7199, "120.0m"), (7200, "2.0h"), (10800, "3.0h"), (172799, "48.0h"), (172800, "2.0d"),
    (181440, "2.1d")])
def test_ages_are_written_for_people(seconds, text):
    assert age(seconds) == text
