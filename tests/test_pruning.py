"""Pruning: the disk side of retention, in backups/ and in each mirror."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta

from backup_manager import BackupManager
from backup_manager.formats import format_backup_name
from tests.helpers import rebalance_doc

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
    assert plan[ahead].keep and plan[ahead].reason == \
        "stamped in the future: a clock problem, see verify"
    assert not plan[at_the_limit].keep, "5 minutes ahead is within the allowed clock skew"
    assert plan[valid].keep and plan[valid].reason == "newest valid backup"
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
    assert plan[f"{mirror}/{names[2]}"].reason == "waiting for upload"
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
        assert (plan[name].keep, plan[name].reason) == (
            False, f"{kind}, older than the 1 h grace period")
        assert not (backups / name).exists()
