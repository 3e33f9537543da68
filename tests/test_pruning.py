"""Pruning: the retention plan applied on disk, in backups/ and in mirror folders."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from datetime import UTC, datetime, timedelta

import pytest

from backup_manager import BackupManager, InvalidStateError
from backup_manager.formats import format_backup_name
from tests.helpers import (
    backups_of,
    cloud_manager,
    flip_bit,
    plant_legacy,
    rebalance_doc,
    refused_port,
)


def test_prune_of_one_state_file_leaves_every_other_untouched(project):
    a, b = project / "state" / "a.json", project / "state" / "b.json"
    roomy = BackupManager(keep_last=100)
    for i in range(4):
        a.write_text(json.dumps({"a": i}))
        b.write_text(json.dumps({"b": i}))
        roomy.backup_state_file(a)
        roomy.backup_state_file(b)
    folder = project / "backups"
    b_before = {n: (folder / n).read_bytes() for n in os.listdir(folder) if n.startswith("b_")}
    assert len(b_before) == 8, "4 backups of b and their sidecars"
    plan = BackupManager(keep_last=1, keep_daily=0).prune("state/a.json")
    assert {n: (folder / n).read_bytes() for n in os.listdir(folder)
            if n.startswith("b_")} == b_before
    assert len(backups_of(folder, "a")) == 1, "a itself was pruned to keep_last=1"
    assert [d.keep for d in plan] == [True, False, False, False]
    assert all(d.name.startswith("a_") for d in plan), "the plan covers a alone"


def test_prune_logs_each_removal_with_its_reasons_in_words(project, state_file, caplog):
    for i in range(2):
        state_file.write_bytes(rebalance_doc(n=i))
        BackupManager(keep_last=100, clock=lambda i=i: NOW + timedelta(minutes=i)
                      ).backup_state_file(state_file)
    older = backups_of(project / "backups")[0]
    caplog.set_level(logging.INFO, logger="backup_manager")
    BackupManager(keep_last=1, keep_daily=0, clock=lambda: NOW).prune()
    # The older restore point goes by the same rules, and with it what kept the backup.
    assert caplog.messages == [f"pruned {older} from backups: a newer backup of "
                               f"{NOW.date()} is kept; not among the 1 newest",
                               "pruned point-0000000001.json from backups: a newer restore "
                               f"point of {NOW.date()} is kept; not among the 1 newest"]


@pytest.mark.parametrize("leftover_age", ["fresh", "stale"])
def test_incomplete_backups_never_count_toward_keep_last(project, leftover_age):
    state = project / "state" / "last_rebalance.json"
    now = datetime.now(UTC)
    clock = [now - timedelta(hours=10)]
    bm = BackupManager(keep_last=3, keep_daily=0, clock=lambda: clock[0])
    complete = []
    for i in range(4):
        clock[0] += timedelta(minutes=10)
        state.write_bytes(rebalance_doc(n=i))
        complete.append(bm.backup_state_file(state))
    assert not complete[0].exists(), "keep_last=3 removed the oldest of four"
    # Newer backups whose sidecar never arrived (a writer killed before its commit
    # marker): fresh ones may still be being written, stale ones are leftovers.
    # A roomy manager makes them, so no prune runs while they are briefly complete.
    roomy = BackupManager(keep_last=100, clock=lambda: clock[0])
    clock[0] = now - (timedelta(hours=3) if leftover_age == "stale" else timedelta(minutes=5))
    incomplete = []
    for i in range(3):
        clock[0] += timedelta(seconds=1)
        state.write_bytes(rebalance_doc(n=f"incomplete {i}"))
        path = roomy.backup_state_file(state)
        path.with_name(path.name + ".sha256").unlink()
        incomplete.append(path)
        if leftover_age == "stale":
            old = (now - timedelta(hours=3)).timestamp()
            os.utime(path, (old, old))
    clock[0] = now
    plan = bm.prune(state)
    kept = [p for p in complete[1:] if p.exists()]
    assert kept == complete[1:], "the 3 newest complete backups all survive"
    assert all(p.with_name(p.name + ".sha256").exists() for p in kept)
    keep_last = {d.name for d in plan if d.keep and d.reasons[0].startswith("keep_last: ")}
    assert sorted(keep_last) == [p.name for p in complete[1:]]
    if leftover_age == "stale":
        assert not any(p.exists() for p in incomplete), "stale incomplete backups go"
    else:
        assert all(p.exists() for p in incomplete), "a writer may still be at work"
    state.unlink()
    assert bm.restore(state).name == complete[-1].name, "incomplete ones are never restored"


def test_old_mtime_state_file_backup_survives(state_file, project):
    forty_days = time.time() - 40 * 86400
    os.utime(state_file, (forty_days, forty_days))
    bm = BackupManager()
    path = bm.backup_state_file(state_file)
    bm.prune()
    assert path.exists()


def test_invalid_state_never_pushes_good_backups_out(state_file, project):
    bm = BackupManager(keep_last=2, keep_daily=0)
    for i in range(2):
        state_file.write_bytes(rebalance_doc(n=i))
        bm.backup_state_file(state_file)
    good = backups_of(project / "backups")
    state_file.write_bytes(b"{broken")
    for _ in range(5):
        with pytest.raises(InvalidStateError):
            bm.backup_state_file(state_file)
    assert backups_of(project / "backups") == good


def test_legacy_backups_are_pruned(project):
    for day in range(1, 21):
        plant_legacy(project, rebalance_doc(datetime(2025, 1, day, tzinfo=UTC)),
                     f"last_rebalance_2025-01-{day:02d}_10-30-00.json")
    plan = BackupManager(keep_last=3, keep_daily=0).prune()
    assert sum(d.keep for d in plan) == 3
    assert backups_of(project / "backups") == [
        f"last_rebalance_2025-01-{d}_10-30-00.json" for d in (18, 19, 20)]


def test_prune_cleans_stale_leftovers_only(state_file, project):
    bm = BackupManager()
    bm.backup_state_file(state_file)
    folder = project / "backups"
    stale_time = time.time() - 3 * 3600
    leftovers = {
        "incomplete": "last_rebalance_2026-01-01_00-00-00.000000Z.json",
        "orphan": "last_rebalance_2026-01-02_00-00-00.000000Z.json.sha256",
        "temp": ".last_rebalance_2026-01-03_00-00-00.000000Z.json.tmp-abcd1234",
    }
    for name in leftovers.values():
        (folder / name).write_bytes(b"x")
        os.utime(folder / name, (stale_time, stale_time))
    fresh = folder / ".last_rebalance_2026-11-01_00-00-00.000000Z.json.tmp-00000000"
    fresh.write_bytes(b"x")
    plan = bm.prune(dry_run=True)
    assert {d.name for d in plan if not d.keep} == set(leftovers.values())
    assert all((folder / n).exists() for n in leftovers.values()), "dry run deletes nothing"
    bm.prune()
    assert not any((folder / n).exists() for n in leftovers.values())
    assert fresh.exists()


def test_prune_never_removes_newest_valid_even_when_newer_ones_are_damaged(state_file,
                                                                           project):
    bm = BackupManager(keep_last=2, keep_daily=0)
    paths = []
    for i in range(5):
        state_file.write_bytes(rebalance_doc(n=i))
        paths.append(bm.backup_state_file(state_file))
    survivors = [p for p in paths if p.exists()]
    for p in survivors:
        flip_bit(p)
    hidden_good = project / "backups" / "last_rebalance_2026-01-01_00-00-00.000000Z.json"
    good = rebalance_doc(n="good")
    hidden_good.write_bytes(good)
    hidden_good.with_name(hidden_good.name + ".sha256").write_text(
        f"{__import__('hashlib').sha256(good).hexdigest()}  {hidden_good.name}\n")
    plan = bm.prune()
    assert hidden_good.exists()
    assert "newest valid backup" in next(d.reasons for d in plan if d.name == hidden_good.name)


def test_prune_keeps_backups_waiting_for_upload(project, state_file):
    bm = cloud_manager(f"http://127.0.0.1:{refused_port()}", "nowhere", keep_last=1,
                       keep_daily=0)
    made = []
    for i in range(4):
        state_file.write_bytes(rebalance_doc(n=i))
        made.append(bm.backup_state_file(state_file))
    assert all(p.exists() for p in made)
    plan = bm.prune(dry_run=True)
    assert {d.reasons for d in plan if d.name == made[0].name} == {("waiting for upload",)}


def test_mirror_follows_retention(project, state_file):
    mirror = project / "mirror"
    bm = BackupManager(mirror_dirs=[mirror], keep_last=2, keep_daily=0)
    for i in range(5):
        state_file.write_bytes(rebalance_doc(n=i))
        bm.backup_state_file(state_file)
    local = sorted(p.name for p in (project / "backups").glob("last_rebalance_*"))
    # Each store is pruned from its own listing; the copy lands after the local
    # prune, so the mirror may hold one more until the next backup prunes it.
    in_mirror = sorted(p.name for p in mirror.glob("last_rebalance_*"))
    assert len(local) == 4 and set(local) <= set(in_mirror) and len(in_mirror) <= 6
    bm.prune()
    assert sorted(p.name for p in mirror.glob("last_rebalance_*")) == local


NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def plant(folder, stem, when, data=None, damaged=False):
    """A complete backup of `stem`.json taken at `when` in `folder`; a damaged one
    does not match its sidecar. Returns its name."""
    data = data if data is not None else rebalance_doc(n=str(when))
    name = format_backup_name(stem, ".json", when)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    digest = hashlib.sha256(b"other bytes" if damaged else data).hexdigest()
    (folder / (name + ".sha256")).write_text(f"{digest}  {name}\n")
    return name


def backups_in(folder, stem):
    """Backups of exactly `stem`.json (not of a longer stem such as a_b)."""
    return sorted(p.name for p in folder.glob(f"{stem}_[0-9]*.json"))


def test_a_mirror_prune_of_one_state_file_leaves_a_longer_stem_alone(project):
    mirror = project / "mirror"
    a = [plant(mirror, "a", NOW - timedelta(days=d)) for d in range(3)]
    a_b = [plant(mirror, "a_b", NOW - timedelta(days=d)) for d in range(3)]
    bm = BackupManager(keep_last=1, keep_daily=0, mirror_dirs=[mirror], clock=lambda: NOW)
    planned = bm.prune("state/a.json", dry_run=True)
    assert sorted(d.name for d in planned) == sorted(f"{mirror}/{n}" for n in a)
    assert backups_in(mirror, "a") == sorted(a), "a dry run removes nothing"
    bm.prune("state/a.json")
    assert backups_in(mirror, "a") == [a[0]]
    assert backups_in(mirror, "a_b") == sorted(a_b)


def test_a_mirror_prune_of_every_state_file_prunes_each(project):
    mirror = project / "mirror"
    newest = [plant(mirror, stem, NOW - timedelta(days=d))
              for stem in ("a", "b") for d in range(3)][::3]
    bm = BackupManager(keep_last=1, keep_daily=0, mirror_dirs=[mirror], clock=lambda: NOW)
    bm.prune()
    assert backups_in(mirror, "a") + backups_in(mirror, "b") == newest


def test_prune_with_no_valid_backup_keeps_by_the_rules(project):
    backups = project / "backups"
    names = [plant(backups, "s", NOW - timedelta(days=d), damaged=True) for d in range(3)]
    bm = BackupManager(keep_last=1, keep_daily=0, clock=lambda: NOW)
    plan = bm.prune()
    assert [(d.name, d.keep) for d in plan] == [(names[0], True), (names[1], False),
                                                 (names[2], False)]
    assert backups_in(backups, "s") == [names[0]]


def test_prune_names_what_protects_a_backup(project):
    backups = project / "backups"
    ahead = plant(backups, "s", NOW + timedelta(hours=1), damaged=True)
    at_the_limit = plant(backups, "s", NOW + timedelta(minutes=5), damaged=True)
    valid = plant(backups, "s", NOW - timedelta(days=1))
    older = plant(backups, "s", NOW - timedelta(days=2))
    bm = BackupManager(keep_last=0, keep_daily=0, clock=lambda: NOW)
    plan = {d.name: d for d in bm.prune(dry_run=True)}
    assert plan[ahead].keep and plan[ahead].reasons == \
        ("stamped in the future: a clock problem, see verify",)
    assert not plan[at_the_limit].keep, "5 minutes ahead is within the allowed clock skew"
    assert plan[valid].keep and plan[valid].reasons == ("newest valid backup",)
    assert not plan[older].keep


def test_a_backup_stamped_ahead_of_the_clock_never_voids_the_history_in_the_folder(project):
    backups = project / "backups"
    history = [plant(backups, "s", NOW - timedelta(days=d)) for d in range(1, 11)]
    ahead = plant(backups, "s", NOW + timedelta(days=400))
    bm = BackupManager(keep_last=0, keep_daily=100, retention_days=30, clock=lambda: NOW)
    bm.prune()
    assert backups_in(backups, "s") == sorted([*history, ahead])


def test_a_prune_plans_backups_and_every_mirror_together(project):
    local = [plant(project / "backups", "a", NOW - timedelta(days=d)) for d in range(2)]
    one = [plant(project / "m1", "a", NOW - timedelta(days=d)) for d in range(2)]
    two = [plant(project / "m2", "a", NOW - timedelta(days=d)) for d in range(2)]
    bm = BackupManager(keep_last=1, keep_daily=0, mirror_dirs=[project / "m1", project / "m2"],
                       clock=lambda: NOW)
    planned = sorted(d.name for d in bm.prune(dry_run=True))
    assert planned == sorted([*local, *(f"{project / 'm1'}/{n}" for n in one),
                              *(f"{project / 'm2'}/{n}" for n in two)])


def test_a_mirror_keeps_a_backup_still_owed_to_it(project):
    mirror = project / "mirror"
    names = [plant(mirror, "a", NOW - timedelta(days=d)) for d in range(3)]
    bm = BackupManager(keep_last=1, keep_daily=0, mirror_dirs=[mirror], clock=lambda: NOW)
    bm.outbox.add(next(iter(bm.mirrors)), names[2])
    plan = {d.name: d for d in bm.prune()}
    assert plan[f"{mirror}/{names[2]}"].reasons == ("waiting for upload",)
    assert backups_in(mirror, "a") == sorted([names[0], names[2]])


def stale(path):
    old = (NOW - timedelta(hours=2)).timestamp()
    os.utime(path, (old, old))


def test_a_prune_of_one_file_cleans_its_own_leftovers_only(project):
    backups = project / "backups"
    plant(backups, "a", NOW)
    plant(backups, "b", NOW)
    temps = {stem: backups / f".{format_backup_name(stem, '.json', NOW)}.tmp-0a1b2c3d"
             for stem in ("a", "b")}
    for temp in temps.values():
        temp.write_text("half")
        stale(temp)
    BackupManager(clock=lambda: NOW).prune("state/a.json")
    assert not temps["a"].exists() and temps["b"].exists()


def test_a_prune_of_every_file_cleans_every_leftover_and_says_what_each_was(project):
    backups = project / "backups"
    leftovers = {}
    for stem in ("a", "b"):
        plant(backups, stem, NOW)
        incomplete = plant(backups, stem, NOW - timedelta(days=1))
        (backups / (incomplete + ".sha256")).unlink()
        orphan = plant(backups, stem, NOW - timedelta(days=2))
        (backups / orphan).unlink()
        leftovers[incomplete] = "incomplete backup"
        leftovers[orphan + ".sha256"] = "orphan sidecar"
    temp = f".{format_backup_name('a', '.json', NOW)}.tmp-0a1b2c3d"
    (backups / temp).write_text("half")
    leftovers[temp] = "temp file"
    for name in leftovers:
        stale(backups / name)
    plan = {d.name: d for d in BackupManager(clock=lambda: NOW).prune()}
    for name, kind in leftovers.items():
        assert (plan[name].keep, plan[name].reasons) == (
            False, (f"{kind}, older than the 1 h grace period",))
        assert not (backups / name).exists()
