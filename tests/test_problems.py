"""problems: what in the status facts needs a person, and the fix for each."""

from __future__ import annotations

import pytest

from backup_manager import BackupManager
from backup_manager.problems import ProblemKind, age, status_problems


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
