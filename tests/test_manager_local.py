"""BackupManager with local backups: backup, restore with fall-back, verify, prune."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from backup_manager import (
    BackupManager,
    ConfigError,
    InvalidStateError,
    NoValidBackupError,
    StorageError,
)
from backup_manager.formats import format_backup_name
from tests.helpers import ROOT, rebalance_doc, two_backups


def backups_of(folder, stem="last_rebalance"):
    return sorted(p.name for p in folder.glob(f"{stem}_*") if not p.name.endswith(".sha256"))


def test_backup_writes_backup_and_sidecar(state_file):
    bm = BackupManager()
    path = bm.backup_state_file(state_file)
    assert path.read_bytes() == state_file.read_bytes()
    sidecar = path.with_name(path.name + ".sha256")
    assert sidecar.exists()
    check = subprocess.run(["sha256sum", "-c", sidecar.name], cwd=path.parent,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert (path.parent.stat().st_mode & 0o777) == 0o700


def test_backup_keeps_state_file_mode(state_file):
    state_file.chmod(0o640)
    path = BackupManager().backup_state_file(state_file)
    assert path.stat().st_mode & 0o777 == 0o640


def test_missing_state_file_returns_none_and_writes_nothing(project):
    bm = BackupManager()
    assert bm.backup_state_file("state/last_rebalance.json") is None
    assert not (project / "backups").exists()


def test_200_backups_in_a_tight_loop_are_distinct_and_verify(state_file, project):
    bm = BackupManager(keep_last=500)
    made = []
    for i in range(200):
        state_file.write_bytes(rebalance_doc(n=i))
        made.append(bm.backup_state_file(state_file).name)
    assert len(set(made)) == 200
    assert backups_of(project / "backups") == sorted(made)
    sidecars = sorted(p.name for p in (project / "backups").glob("*.sha256"))
    check = subprocess.run(["sha256sum", "-c", *sidecars], cwd=project / "backups",
                           capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.count(": OK") == 200


def test_same_instant_clock_moves_to_next_microsecond(state_file, project):
    fixed = datetime(2026, 2, 17, 10, 30, tzinfo=UTC)
    bm = BackupManager(keep_last=50, clock=lambda: fixed)
    names = [bm.backup_state_file(state_file).name for _ in range(3)]
    assert names == [format_backup_name("last_rebalance", ".json",
                                        fixed + timedelta(microseconds=i)) for i in range(3)]


def test_restore_latest_is_byte_identical(state_file):
    bm = BackupManager()
    original = state_file.read_bytes()
    bm.backup_state_file(state_file)
    state_file.unlink()
    assert bm.restore_from_backup(str(state_file)) is True
    assert state_file.read_bytes() == original


def test_restore_creates_missing_state_folder(state_file, project):
    bm = BackupManager()
    original = state_file.read_bytes()
    bm.backup_state_file(state_file)
    state_file.unlink()
    (project / "state").rmdir()
    assert bm.restore_from_backup("state/last_rebalance.json")
    assert state_file.read_bytes() == original


def flip_bit(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


DAMAGES = {
    "bit flipped": flip_bit,
    "truncated": lambda p: p.write_bytes(p.read_bytes()[:10]),
    "empty": lambda p: p.write_bytes(b""),
    "sidecar missing": lambda p: p.with_name(p.name + ".sha256").unlink(),
    "sidecar empty": lambda p: p.with_name(p.name + ".sha256").write_bytes(b""),
    "sidecar garbage": lambda p: p.with_name(p.name + ".sha256").write_bytes(b"zz  x\n"),
    "backup deleted, sidecar left": lambda p: p.unlink(),
    "replaced by a folder": lambda p: (p.unlink(), p.mkdir()),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_restore_falls_back_past_damaged_newest(state_file, damage, caplog):
    bm, older, newest = two_backups(state_file)
    DAMAGES[damage](newest)
    assert bm.restore_from_backup(state_file) is True
    assert state_file.read_bytes() == older
    if damage not in ("backup deleted, sidecar left", "replaced by a folder"):
        assert f"skipping backup {newest.name}" in caplog.text


def test_restore_skips_backups_with_invalid_content(state_file, project):
    bm, older, newest = two_backups(state_file)
    bad = b'{"timestamp": "not a time"}'
    newest.write_bytes(bad)
    newest.with_name(newest.name + ".sha256").write_text(
        f"{__import__('hashlib').sha256(bad).hexdigest()}  {newest.name}\n")
    result = bm.restore(state_file)
    assert state_file.read_bytes() == older
    assert any("timestamp" in why for _, why in result.skipped)


def test_no_valid_backup_returns_false_and_raises_in_rich_call(state_file):
    bm, _, newest = two_backups(state_file)
    for p in (state_file.parent.parent / "backups").glob("last_rebalance_*.json"):
        flip_bit(p)
    assert bm.restore_from_backup(state_file) is False
    assert not state_file.exists()
    with pytest.raises(NoValidBackupError) as info:
        bm.restore(state_file)
    assert len(info.value.tried) == 2
    assert all("checksum mismatch" in why for _, why in info.value.tried)


def test_restore_of_never_backed_up_file_is_false(project):
    assert BackupManager().restore_from_backup("state/last_rebalance.json") is False


def test_restore_by_timestamp_prefix(state_file, project):
    bm = BackupManager(keep_last=10, clock=lambda: datetime(2026, 2, 17, 10, 30,
                                                            tzinfo=UTC))
    first = rebalance_doc(datetime(2026, 2, 1, tzinfo=UTC))
    state_file.write_bytes(first)
    bm.backup_state_file(state_file)
    bm.folder.clock = lambda: datetime(2026, 2, 18, 9, 0, tzinfo=UTC)
    state_file.write_bytes(rebalance_doc(datetime(2026, 2, 2, tzinfo=UTC)))
    bm.backup_state_file(state_file)
    assert bm.restore_from_backup(state_file, "2026-02-17_10-30-00") is True
    assert state_file.read_bytes() == first
    assert bm.restore_from_backup(state_file, "2026-02-19") is False


@pytest.mark.parametrize("bad", ["*", "2026-02-1[0-9]", "../x", "a/b"])
def test_restore_refuses_glob_and_path_timestamps(state_file, bad):
    bm = BackupManager()
    bm.backup_state_file(state_file)
    with pytest.raises(ValueError, match="timestamp"):
        bm.restore_from_backup(state_file, bad)


def test_valid_replaced_file_is_kept_as_backup(state_file, project):
    bm = BackupManager()
    old = state_file.read_bytes()
    bm.backup_state_file(state_file)
    current = rebalance_doc(n="current, never backed up")
    state_file.write_bytes(current)
    result = bm.restore(state_file)
    assert state_file.read_bytes() == old
    assert result.replaced == "valid"
    assert (project / "backups" / result.kept_as).read_bytes() == current


def test_invalid_replaced_file_goes_to_corrupt(state_file, project):
    bm = BackupManager()
    bm.backup_state_file(state_file)
    state_file.write_bytes(b"garbage{")
    result = bm.restore(state_file)
    assert result.kept_as.startswith("corrupt/")
    assert (project / "backups" / result.kept_as).read_bytes() == b"garbage{"
    assert backups_of(project / "backups") == [result.name], "garbage is not a backup"


def test_restore_when_live_equals_backup_changes_nothing(state_file, project):
    bm = BackupManager()
    bm.backup_state_file(state_file)
    before = sorted(os.listdir(project / "backups"))
    mtime = state_file.stat().st_mtime_ns
    result = bm.restore(state_file)
    assert result.changed is False
    assert state_file.stat().st_mtime_ns == mtime
    assert sorted(os.listdir(project / "backups")) == before


def test_dry_run_changes_nothing(state_file, project):
    bm = BackupManager()
    bm.backup_state_file(state_file)
    state_file.write_bytes(b"garbage")
    before = sorted(os.listdir(project / "backups"))
    result = bm.restore(state_file, dry_run=True)
    assert result.replaced == "invalid" and result.kept_as is None
    assert state_file.read_bytes() == b"garbage"
    assert sorted(os.listdir(project / "backups")) == before


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
    assert len([n for n in backups_of(project / "backups", "a") if not n.startswith("a_b")]) == 1
    a.unlink()
    ab.unlink()
    assert bm.restore_from_backup(a)
    assert json.loads(a.read_text()) == {"who": "a"}
    (project / "backups").joinpath(backups_of(project / "backups", "a")[0]).unlink()
    assert backups_of(project / "backups", "a")[0].startswith("a_b")
    bm2 = BackupManager()
    a.unlink()
    assert bm2.restore_from_backup(a) is False, "a_b's backups are never a's"


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
    keep_last = {d.name: d.reason for d in plan if d.keep and "keep_last" in d.reason}
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


@pytest.mark.parametrize("content", [b'{"timestamp": "2026-02-1', b"", b"\x00\x00", b"[1]",
                                     b'{"cash": 1}'])
def test_invalid_json_is_refused_at_backup(state_file, project, content):
    state_file.write_bytes(content)
    with pytest.raises(InvalidStateError):
        BackupManager().backup_state_file(state_file)
    assert not (project / "backups").exists() or backups_of(project / "backups") == []


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


def test_dangling_symlink_in_backups_does_not_break_backup(state_file, project):
    (project / "backups").mkdir()
    (project / "backups" / "last_rebalance_2026-01-01_00-00-00.000000Z.json").symlink_to(
        project / "gone")
    (project / "backups" / "junk").symlink_to(project / "gone")
    bm = BackupManager()
    assert bm.backup_state_file(state_file) is not None
    assert bm.verify().problems[0].status == "not a regular file"


def test_backup_that_is_a_symlink_is_never_restored(state_file, project):
    bm = BackupManager()
    good = bm.backup_state_file(state_file)
    evil = project / "evil.json"
    evil.write_bytes(rebalance_doc(n="evil"))
    name = format_backup_name("last_rebalance", ".json", datetime.now(UTC))
    (project / "backups" / name).symlink_to(evil)
    digest = __import__("hashlib").sha256(evil.read_bytes()).hexdigest()
    (project / "backups" / (name + ".sha256")).write_text(f"{digest}  {name}\n")
    state_file.unlink()
    assert bm.restore_from_backup(state_file)
    assert state_file.read_bytes() == good.read_bytes()


def test_symlink_at_next_backup_name_is_not_written_through(state_file, project):
    fixed = datetime(2026, 2, 17, 10, 30, tzinfo=UTC)
    (project / "backups").mkdir(mode=0o700)
    victim = project / "victim.txt"
    victim.write_bytes(b"precious")
    taken = format_backup_name("last_rebalance", ".json", fixed)
    (project / "backups" / taken).symlink_to(victim)
    path = BackupManager(clock=lambda: fixed).backup_state_file(state_file)
    assert path.name == format_backup_name("last_rebalance", ".json",
                                           fixed + timedelta(microseconds=1))
    assert victim.read_bytes() == b"precious"


LEGACY = "last_rebalance_2026-02-17_10-30-00.json"


def plant_legacy(project, content, name=LEGACY):
    folder = project / "backups"
    folder.mkdir(exist_ok=True)
    (folder / name).write_bytes(content)
    digest = __import__("hashlib").sha256(content).hexdigest()
    (folder / (name + ".sha256")).write_text(f"{digest}  {name}\n")


def test_legacy_backups_are_listed_restored_verified(project):
    content = rebalance_doc(datetime(2026, 2, 17, tzinfo=UTC))
    plant_legacy(project, content)
    bm = BackupManager()
    assert [b.name for b in bm.list_backups("state/last_rebalance.json")] == [LEGACY]
    assert bm.verify().ok
    assert bm.restore_from_backup("state/last_rebalance.json", "2026-02-17_10-30-00")
    assert (project / "state" / "last_rebalance.json").read_bytes() == content


def test_legacy_backups_are_pruned(project):
    for day in range(1, 21):
        plant_legacy(project, rebalance_doc(datetime(2025, 1, day, tzinfo=UTC)),
                     f"last_rebalance_2025-01-{day:02d}_10-30-00.json")
    plan = BackupManager(keep_last=3, keep_daily=0).prune()
    assert sum(d.keep for d in plan) == 3
    assert backups_of(project / "backups") == [
        f"last_rebalance_2025-01-{d}_10-30-00.json" for d in (18, 19, 20)]


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
    assert "newest valid backup" in next(d.reason for d in plan if d.name == hidden_good.name)


def test_unusable_backups_folder_fails_at_backup_time_only(state_file, project):
    (project / "backups").write_text("a file, not a folder")
    bm = BackupManager()
    with pytest.raises(StorageError, match="backups"):
        bm.backup_state_file(state_file)


@pytest.mark.parametrize("kwargs,key", [
    ({"keep_last": -1}, "keep_last"),
    ({"retention_days": "x"}, "retention_days"),
    ({"cloud_enabled": True}, "s3_bucket"),
    ({"lock_timeout": -2}, "lock_timeout"),
])
def test_bad_arguments_name_the_key(project, kwargs, key):
    with pytest.raises(ConfigError, match=key):
        BackupManager(**kwargs)


def test_from_config_resolves_against_config_folder(tmp_path, monkeypatch):
    cfg = tmp_path / "conf" / "config.yaml"
    cfg.parent.mkdir()
    cfg.write_text("backup:\n  dir: my-backups\n  keep_last: 3\n"
                   "  state_files: [state/last_rebalance.json]\n")
    monkeypatch.chdir(tmp_path)
    bm = BackupManager.from_config(cfg)
    assert bm.backup_dir == cfg.parent / "my-backups"
    assert bm.state_files == [cfg.parent / "state" / "last_rebalance.json"]
    assert bm.policy.keep_last == 3


@pytest.mark.parametrize("section,message", [
    ({"keep_lats": 3}, "unknown key.*keep_lats.*valid keys: dir"),
    ({"keep_last": -1}, "backup.keep_last"),
    ({"retention_days": "thirty"}, "backup.retention_days"),
    ({"cloud_enabled": True}, "s3_bucket"),
    ({"lock_timeout_seconds": "10"}, "lock_timeout_seconds"),
    ({"s3_sse": "rot13"}, "s3_sse"),
    ({"durable": "yes"}, "backup.durable"),
    ({"state_files": "state/x.json"}, "state_files"),
    ({"s3_max_attempts": 0}, "backup.s3_max_attempts"),
    ({"s3_read_timeout_seconds": "2"}, "backup.s3_read_timeout_seconds"),
    ({"s3_connect_timeout_seconds": 0}, "backup.s3_connect_timeout_seconds"),
])
def test_from_config_rejects_bad_values(project, section, message):
    with pytest.raises(ConfigError, match=message):
        BackupManager.from_config({"backup": section})


def test_import_loads_no_boto3_yaml_or_logging():
    code = ("import sys, backup_manager.cli; "
            "print(*(m in sys.modules for m in ('boto3', 'yaml', 'logging', 'dataclasses')))")
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out.split() == ["False"] * 4, "cron pays for every import at start-up"


def test_retention_plans_with_the_same_backups_that_listing_shows(project):
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
