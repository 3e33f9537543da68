"""Health: verify (every backup in every store) and the status facts and problems."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

import pytest

from backup_manager import BackupManager
from backup_manager.health import split_fix, status_problems
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
                    "path": str(state_file), "live": "backed up",
                    "live_detail": mine["live_detail"]}
    assert mine["live_detail"] != older.name, "the damaged newest holds the live bytes"
    assert theirs["live"] == "missing"
    assert (theirs["state_file"], theirs["backups"], theirs["newest_valid"]) == (
        "never.json", 0, None)
    folder = project / "backups"
    assert facts["disk_bytes"] == sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    (target,) = facts["targets"]
    assert (target["target"], target["pending"], target["conflicts"]) == (str(mirror), 2, 0)
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
    assert [split_fix(p)[0] for p in with_error if p not in problems] == [
        "a backup failed and was not caught up yet: 2026-02-17 disk full"]
    assert len(problems) == len(expected), problems
    for line, start in zip(problems, expected, strict=True):
        assert line.startswith(start), line
