"""The catalogue: which backups of which state file a folder holds, in order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backup_manager import BackupManager, StateKey
from backup_manager.catalog import backup_sets, group_backups, sidecar_time, state_files_in
from backup_manager.formats import format_backup_name
from backup_manager.local import LocalStore


def test_retention_plans_with_the_same_backups_that_listing_shows():
    stamps = ["2026-02-17_10-30-00.123456Z", "2026-02-30_10-30-00.000001Z",
              "2026-13-01_10-30-00.000001Z", "2026-02-16_23-59-59", "2026-02-29_00-00-00",
              "2024-02-29_12-00-00.000000Z", "2026-02-15_24-00-00.000000Z"]
    names = [f"s_{t}.json{side}" for t in stamps for side in ("", ".sha256")]
    backups = group_backups(names, [StateKey("s", ".json")])[StateKey("s", ".json")]
    planned = backups.retention_records()
    assert [name for name, _ in planned] == [b.name for b in backups.complete()]
    assert [when for _, when in planned] == [b.when for b in backups.complete()]
    assert len(planned) == 3, "Feb 30, month 13, Feb 29 2026 and hour 24 are no instants"


def test_a_state_file_is_matched_by_its_whole_name_only():
    names = ["last_rebalance_2026-02-17_10-30-00.000000Z.json",
             "last_rebalance_2026-02-17_10-30-00.000000Z.json.sha256",
             "rebalance_2026-02-16_10-30-00.000000Z.json",
             "last_rebalance_attempt_2026-02-18_10-30-00.000000Z.json",
             "xlast_rebalance_2026-02-18_10-30-00.000000Z.json"]
    sets = group_backups(names, [StateKey("rebalance", ".json"),
                                 StateKey("last_rebalance", ".json")])
    assert [b.name for b, _ in sets[StateKey("rebalance", ".json")]] == [names[2]]
    assert [(b.name, done) for b, done in sets[StateKey("last_rebalance", ".json")]] == [
        (names[0], True)]
    assert state_files_in(names) == ["last_rebalance.json", "last_rebalance_attempt.json",
                                     "rebalance.json", "xlast_rebalance.json"]


def test_legacy_names_sort_before_every_new_style_name_whatever_the_zone():
    # The original module's names are local time; the folder may have moved to a
    # machine in another zone, so their converted instant says nothing about order.
    names = ["s_2026-02-17_10-30-00.json", "s_2099-01-01_00-00-00.json",
             "s_2026-02-17_10-30-01.000000Z.json", "s_2001-01-01_00-00-00.000001Z.json"]
    (backups,) = group_backups(names, None).values()
    assert [b.name for b, _ in backups] == [names[2], names[3], names[1], names[0]]
    assert [done for _, done in backups] == [False] * 4
    assert backups.newest_stamp == "2026-02-17_10-30-01.000000Z"
    assert group_backups(names[:2], None)[StateKey("s", ".json")].newest_stamp is None


def test_backup_sets_of_one_state_file_hold_that_file_only(tmp_path):
    names = ["a_2026-02-17_10-30-00.000000Z.json", "a_2026-02-17_10-30-00.000000Z.json.sha256",
             "b_2026-02-17_10-30-00.000000Z.json", "b_2026-02-17_10-30-00.000000Z.json.sha256"]
    for name in names:
        (tmp_path / name).write_bytes(b"{}")
    store = LocalStore(tmp_path)
    a, b = StateKey("a", ".json"), StateKey("b", ".json")
    (only_a,) = backup_sets(store, [a]).items()
    assert only_a[0] == a and [x.name for x in only_a[1].complete()] == [names[0]]
    assert sorted(backup_sets(store)) == [a, b]
    assert sorted(backup_sets(store, [a, b])) == [a, b]


def test_an_orphan_sidecar_is_dated_by_its_name():
    assert sidecar_time("s_2026-02-17_10-30-00.123456Z.json.sha256") == \
        datetime(2026, 2, 17, 10, 30, 0, 123456, tzinfo=UTC)
    assert sidecar_time("s_2026-02-30_10-30-00.000000Z.json.sha256") is None, "no such day"


def test_a_clock_gone_back_stamps_the_next_backup_just_after_the_newest(project):
    # Promise 9: name order is creation order whatever the clock does.
    when = datetime(2026, 3, 1, 12, tzinfo=UTC)
    bm = BackupManager(clock=lambda: when)
    state = project / "state" / "s.json"
    state.write_text('{"n": 1}')
    first = bm.backup_state_file(state).name
    bm.folder.clock = lambda: when - timedelta(hours=1)
    state.write_text('{"n": 2}')
    second = bm.backup_state_file(state).name
    assert second == format_backup_name("s", ".json", when + timedelta(microseconds=1))
    assert second > first
    assert bm.restore(state, dry_run=True).name == second


@pytest.mark.xfail(strict=True, reason="bug: next_stamp reads the newest stamp's instant "
                   "without checking its date, so a name with an impossible date (Feb 30) "
                   "newer than every backup makes every backup of that file raise ValueError")
def test_a_planted_name_with_an_impossible_date_never_stops_a_backup(project):
    bm = BackupManager()
    state = project / "state" / "s.json"
    state.write_text('{"n": 1}')
    bm.backup_state_file(state)
    (project / "backups" / "s_2099-02-30_10-30-00.000000Z.json").write_text('{"n": 0}')
    state.write_text('{"n": 2}')
    made = bm.backup_state_file(state)
    assert made.read_text() == '{"n": 2}'
    assert bm.restore(state, dry_run=True).name == made.name
