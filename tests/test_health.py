"""Health: verify (every backup in every store) and the status facts and problems."""

from __future__ import annotations

import errno
import hashlib
import os
import time
from datetime import UTC, datetime, timedelta

import pytest

from backup_manager import BackupManager, CloudError, StateKey
from backup_manager.errors import unreachable
from backup_manager.formats import format_backup_name
from backup_manager.health import (
    ProblemKind,
    VerifyReport,
    age,
    status_problems,
    verify_stores,
    verify_uploaded,
)
from backup_manager.local import LocalStore
from tests.helpers import flip_bit, rebalance_doc


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


def state_facts(newest="s_2026-02-17_12-00-00.000000Z.json", age=60.0, future=(),
                live="backed up"):
    return {"state_file": "s.json", "backups": 1, "complete": 1, "newest_valid": newest,
            "newest_valid_time": None, "newest_valid_age_seconds": age if newest else None,
            "stamped_in_future": list(future), "path": "state/s.json", "live": live,
            "live_detail": ""}


def target_facts(pending_age=None, conflicts=0, last_success="2026-02-17T11:00:00+00:00"):
    return {"target": "s3://b/p", "pending": int(pending_age is not None) + conflicts,
            "conflicts": conflicts, "oldest_pending_age_seconds": pending_age,
            "last_success": last_success, "last_error": None}


FUTURE = "s_2099-01-01_00-00-00.000000Z.json"
PROBLEMS = {
    # name: (state files, targets, max_age_hours, what each problem line starts with)
    "all well": ([state_facts()], [target_facts()], 1, []),
    "nothing to watch": ([], [], None, ["no state files configured and no backups found"]),
    "no valid backup": ([state_facts(newest=None)], [], None, ["s.json has no valid backup"]),
    "old backup, no limit": ([state_facts(age=90 * 86400)], [], None, []),
    "old backup": ([state_facts(age=3 * 3600)], [], 2,
                   ["s.json: newest valid backup is 3.0h old"]),
    "backup within the limit": ([state_facts(age=3 * 3600)], [], 4, []),
    "stamped in the future": ([state_facts(future=[FUTURE])], [], None,
                              [f"{FUTURE} is stamped in the future"]),
    "conflicts": ([state_facts()], [target_facts(conflicts=2)], None,
                  ["2 conflicting copy(ies) to s3://b/p"]),
    "copies pending too long": ([state_facts()], [target_facts(pending_age=5 * 3600)], 1,
                                ["copies to s3://b/p pending for 5.0h"]),
    "copies pending, within the limit": ([state_facts()], [target_facts(pending_age=60)], 1,
                                         []),
    "copies pending, no limit": ([state_facts()], [target_facts(pending_age=10 ** 6)], None,
                                 []),
    "copies pending to a target that never took one": (
        [state_facts()], [target_facts(pending_age=60, last_success=None)], None,
        ["1 copy(ies) to s3://b/p pending and it never took one"]),
    "live bytes no backup holds": ([state_facts(live="not backed up")], [], None,
                                   ["state/s.json holds bytes no backup holds"]),
    "live equal to an older backup": ([state_facts(live="equals an older backup")], [], None,
                                      []),
}


@pytest.mark.parametrize("case", list(PROBLEMS))
def test_status_problems_name_what_needs_a_person(case):
    states, targets, max_age_hours, expected = PROBLEMS[case]
    facts = {"backup_dir": "backups", "disk_bytes": 0, "state_files": states,
             "targets": targets}
    problems = status_problems(facts, max_age_hours)
    with_error = status_problems({**facts, "last_backup_error": "2026-02-17 disk full"},
                                 max_age_hours)
    assert [p.what for p in with_error if p not in problems] == [
        "a backup failed and was not caught up yet: 2026-02-17 disk full"]
    assert len(problems) == len(expected), problems
    for line, start in zip(problems, expected, strict=True):
        assert line.what.startswith(start), line


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


FACTS = {
    "state_files": [
        {"state_file": "x.json", "stamped_in_future": ["x_2099-01-01_00-00-00.000000Z.json"],
         "newest_valid": "x_2026-03-01_10-00-00.000000Z.json",
         "newest_valid_age_seconds": 7200.0, "path": "state/x.json", "live": "backed up"},
        {"state_file": "y.json", "stamped_in_future": [], "newest_valid": None,
         "newest_valid_age_seconds": None, "path": "state/y.json", "live": "missing"},
        {"state_file": "z.json", "stamped_in_future": [],
         "newest_valid": "z_2026-03-01_11-00-00.000000Z.json",
         "newest_valid_age_seconds": 3600.0, "path": "state/z.json", "live": "backed up"},
    ],
    "backup_dir": "backups",
    "targets": [
        {"target": "s3://bucket/prefix", "conflicts": 2, "oldest_pending_age_seconds": 7200.0,
         "pending": 3, "last_success": "2026-03-01T09:00:00+00:00"},
        {"target": "/mnt/nas", "conflicts": 0, "oldest_pending_age_seconds": 3600.0,
         "pending": 1, "last_success": "2026-03-01T09:00:00+00:00"},
        {"target": "/mnt/usb", "conflicts": 0, "oldest_pending_age_seconds": None,
         "pending": 0, "last_success": None},
    ],
}


X_FUTURE = ("x_2099-01-01_00-00-00.000000Z.json is stamped in the future: the clock was "
            "ahead when it was made, or is behind now")
CONFLICTS = ("2 conflicting copy(ies) to s3://bucket/prefix: it holds other bytes under the "
             "same name, never overwritten")


def problems_of(facts, max_age_hours=None):
    return [p.what for p in status_problems(facts, max_age_hours)]


def test_status_problems_with_a_maximum_age():
    # z.json and /mnt/nas are exactly one hour old: not over the limit.
    assert problems_of(FACTS, max_age_hours=1) == [
        X_FUTURE, "x.json: newest valid backup is 2.0h old", "y.json has no valid backup",
        CONFLICTS, "copies to s3://bucket/prefix pending for 2.0h"]


def test_status_problems_without_a_maximum_age():
    assert problems_of(FACTS) == [X_FUTURE, "y.json has no valid backup", CONFLICTS]


def test_status_problems_of_a_folder_with_nothing_in_it():
    assert problems_of({"state_files": [], "targets": []}) == [
        "no state files configured and no backups found"]
    assert problems_of({"state_files": FACTS["state_files"][2:], "targets": []}) == []


@pytest.mark.parametrize("seconds,text", [
    (None, "-"), (0, "0s"), (45, "45s"), (119, "119s"), (120, "2.0m"), (750, "12.5m"),
    (7199, "120.0m"), (7200, "2.0h"), (10800, "3.0h"), (172799, "48.0h"), (172800, "2.0d"),
    (181440, "2.1d")])
def test_ages_are_written_for_people(seconds, text):
    assert age(seconds) == text


def test_an_intent_no_point_settles_is_a_problem_until_one_does(tmp_path):
    bm = BackupManager(tmp_path / "backups")
    orders = [{"client_order_id": "daliolite-abc-1", "symbol": "VTI", "side": "buy",
               "notional": 400.0}]
    intent, _ = bm.claim_point("orders", "intent: 1 order(s)", details={"orders": orders})
    bm.commit_point("run", "a run that is not the rebalance", force=True)
    shown = [p for p in status_problems(bm.status()) if p.kind == ProblemKind.INTENT_UNSETTLED]
    assert [p.subject for p in shown] == [f"restore point {intent.sequence}"]
    assert "buy VTI $400.0 (daliolite-abc-1)" in shown[0].what
    bm.commit_point("run", "the rebalance", details={"settles": [intent.sequence]},
                    force=True)
    assert not [p for p in status_problems(bm.status())
                if p.kind == ProblemKind.INTENT_UNSETTLED]
