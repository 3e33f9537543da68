"""status: the facts of an installation (state files, restore points, copy targets)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from backup_manager import BackupManager
from backup_manager.problems import status_problems
from tests.helpers import flip_bit, plant, rebalance_doc

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_status_facts_give_the_newest_valid_backup_and_what_is_owed(project, state_file):
    now = datetime(2026, 2, 17, 12, 0, tzinfo=UTC)
    clock = [now]
    never = project / "state" / "never.json"
    mirror = project / "not-mounted" / "mirror"
    bm = BackupManager(state_files=[state_file, never], mirror_dirs=[mirror],
                       clock=lambda: clock[0])
    older = bm.backup_state_file(state_file)
    clock[0] = now + timedelta(minutes=1)
    state_file.write_bytes(rebalance_doc(n="newer"))
    flip_bit(bm.backup_state_file(state_file))  # damaged: the older one is the newest valid
    clock[0] = now + timedelta(hours=3)
    facts = bm.status()
    mine, theirs = facts["state_files"]
    assert mine == {"state_file": "last_rebalance.json", "backups": 2, "complete": 2,
                    "newest_valid": older.name, "newest_valid_time": now.isoformat(),
                    "newest_valid_age_seconds": 3 * 3600.0, "stamped_in_future": [],
                    "pinned_after_future": 0, "path": str(state_file), "live": "backed up",
                    "live_detail": mine["live_detail"], "newest_damaged": mine["live_detail"]}
    assert mine["live_detail"] != older.name, "the damaged newest holds the live bytes"
    kinds = [p.kind for p in status_problems(facts)]
    assert "newest-backup-damaged" in kinds, "a damaged newest backup is never healthy"
    assert theirs["live"] == "missing"
    assert (theirs["state_file"], theirs["backups"], theirs["newest_valid"]) == (
        "never.json", 0, None)
    folder = project / "backups"
    assert facts["disk_bytes"] == sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    (target,) = facts["targets"]
    # Two backups and their two restore points.
    assert (target["target"], target["pending"], target["conflicts"]) == (str(mirror), 4, 0)
    assert "not mounted" in target["last_error"] and target["last_success"] is None


def test_status_gives_the_newest_valid_backup_of_each_configured_file(project):
    bm = BackupManager(state_files=["state/last_rebalance.json", "state/other.json"],
                       clock=lambda: NOW)
    (project / "state" / "last_rebalance.json").write_bytes(rebalance_doc())
    name = bm.backup_state_file("state/last_rebalance.json").name
    bm.folder.clock = lambda: NOW + timedelta(seconds=90)
    backups = project / "backups"
    disk = sum(p.stat().st_size for p in backups.iterdir() if p.is_file())
    assert (backups / ".lock").stat().st_size == 0
    facts = bm.status()
    point = facts.pop("points")
    assert facts == {
        "backup_dir": "backups",
        "backups_unwritable": None,
        "disk_bytes": disk,
        "recovery": None,
        "state_files": [
            {"stamped_in_future": [], "pinned_after_future": 0,
             "state_file": "last_rebalance.json", "backups": 1,
             "complete": 1, "newest_valid": name, "newest_valid_time": NOW.isoformat(),
             "newest_valid_age_seconds": 90.0, "path": "state/last_rebalance.json",
             "live": "backed up", "live_detail": name, "newest_damaged": None},
            {"stamped_in_future": [], "pinned_after_future": 0,
             "state_file": "other.json", "backups": 0,
             "complete": 0, "newest_valid": None, "newest_valid_time": None,
             "newest_valid_age_seconds": None, "path": "state/other.json",
             "live": "missing", "live_detail": "", "newest_damaged": None}],
        "targets": [],
        "unconfigured_targets": [],
        "copies_signed": None,  # no copy target: nothing to sign
        "refused_copies": [],
    }
    assert point == {"count": 1, "newest": 1, "newest_damaged": None,
                     "name": "point-0000000001.json", "time": NOW.isoformat(),
                     "kind": "backup", "writer": bm.writer,
                     "files": {"last_rebalance.json": name}, "open_intents": []}


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
        == (str(mirror), 2, 0, None), "the backup and its restore point"
    assert 0 <= target["oldest_pending_age_seconds"] < 60
    assert "not mounted" in target["last_error"]
    nas.mkdir()
    assert bm.sync().copied == 2
    (target,) = bm.status()["targets"]
    assert (target["pending"], target["oldest_pending_age_seconds"], target["last_error"]) == (
        0, None, None)
    done = datetime.fromisoformat(target["last_success"])
    assert abs(datetime.now(UTC) - done) < timedelta(minutes=1)
