"""The catalogue: which backups of which state file a folder holds, in order; a stem
never claims another stem's backups, and legacy names are listed (first in time order,
last in the list)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta

from backup_manager import BackupManager, StateKey
from backup_manager.catalog import backup_sets, group_backups, sidecar_time, state_files_in
from backup_manager.formats import format_backup_name
from backup_manager.local import LocalStore
from tests.helpers import LEGACY, backups_of, plant_legacy, rebalance_doc


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


def test_stems_never_see_each_others_backups(project):
    a, ab = project / "state" / "a.json", project / "state" / "a_b.json"
    a.write_text('{"who": "a"}')
    ab.write_text('{"who": "a_b"}')
    # a_b's surplus is made without pruning it: only prune(a) could remove it.
    roomy = BackupManager(keep_last=100)
    for _ in range(3):
        roomy.backup_state_file(a)
        roomy.backup_state_file(ab)
    bm = BackupManager(keep_last=1, keep_daily=0)
    bm.prune(a)
    assert len(backups_of(project / "backups", "a_b")) == 3, "prune(a) never touches a_b"
    # The newest, and the one the newest restore point names (same bytes, older name).
    assert len([n for n in backups_of(project / "backups", "a") if not n.startswith("a_b")]) == 2
    a.unlink()
    ab.unlink()
    assert bm.restore_from_backup(a)
    assert json.loads(a.read_text()) == {"who": "a"}
    for name in [n for n in backups_of(project / "backups", "a") if not n.startswith("a_b")]:
        (project / "backups").joinpath(name).unlink()
    assert backups_of(project / "backups", "a")[0].startswith("a_b")
    bm2 = BackupManager()
    a.unlink()
    assert bm2.restore_from_backup(a) is False, "a_b's backups are never a's"


def test_a_stem_that_ends_another_stem_never_claims_its_backups(project):
    # "rebalance" is the tail of "last_rebalance": a name must match from its start.
    last = project / "state" / "last_rebalance.json"
    other = project / "state" / "rebalance.json"
    roomy = BackupManager(keep_last=100)
    made = []
    for i in range(3):
        last.write_bytes(rebalance_doc(n=i))
        made.append(roomy.backup_state_file(last).name)
    other.write_text('{"x": 1}')
    own = roomy.backup_state_file(other).name
    folder = project / "backups"
    before = sorted(os.listdir(folder))
    strict = BackupManager(keep_last=1, keep_daily=0)

    assert [b.name for b in strict.list_backups(other)] == [own]
    assert [i.name for i in strict.verify(other).items] == [own]
    plan = strict.prune(other)
    assert [d.name for d in plan] == [own]
    assert sorted(os.listdir(folder)) == before, "nothing of last_rebalance's is removed"
    assert [b.name for b in strict.list_backups(last)] == sorted(made, reverse=True)

    # With no backup of its own, rebalance.json has nothing to list, verify or prune.
    for name in (own, own + ".sha256"):
        (folder / name).unlink()
    assert strict.list_backups(other) == []
    assert strict.verify(other).items == []
    assert strict.prune(other) == []
    assert len(backups_of(folder)) == 3
    other.unlink()
    assert strict.restore_from_backup(other) is False
    assert not other.exists()


def test_legacy_backups_are_listed_restored_verified(project):
    content = rebalance_doc(datetime(2026, 2, 17, tzinfo=UTC))
    plant_legacy(project, content)
    bm = BackupManager()
    assert [b.name for b in bm.list_backups("state/last_rebalance.json")] == [LEGACY]
    assert bm.verify().ok
    assert bm.restore_from_backup("state/last_rebalance.json", "2026-02-17_10-30-00")
    assert (project / "state" / "last_rebalance.json").read_bytes() == content


def test_list_backups_and_prune_see_the_same_backups(project):
    stamps = ["2026-02-17_10-30-00.123456Z", "2026-02-30_10-30-00.000001Z",
              "2026-13-01_10-30-00.000001Z", "2026-02-16_23-59-59", "2026-02-29_00-00-00",
              "2024-02-29_12-00-00.000000Z", "2026-02-15_24-00-00.000000Z"]
    for stamp in stamps:
        plant_legacy(project, b'{"s": 1}', f"s_{stamp}.json")
    bm = BackupManager(keep_last=100)
    listed = bm.list_backups("state/s.json")
    planned = bm.prune("state/s.json", dry_run=True)
    assert {(d.name, d.when) for d in planned} == {(b.name, b.timestamp) for b in listed}
    assert [b.name for b in listed] == ["s_2026-02-17_10-30-00.123456Z.json",
                                        "s_2024-02-29_12-00-00.000000Z.json",
                                        "s_2026-02-16_23-59-59.json"], \
        "Feb 30, month 13, Feb 29 2026 and hour 24 are no instants; legacy names come last"


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
