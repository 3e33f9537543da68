"""Stores that misbehave: each case an outside review found, through real processes
(real symlinks, a sparse file, faketime, a read-only bind mount, strace's fault
injection, a moto server on 127.0.0.1). Each lost a backup, hid one, read a planted
object whole or showed a broken target as OK before it was fixed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from backup_manager import BackupManager
from tests.helpers import ROOT, rebalance_doc

TIMEOUT = 120


def _env(extra=None):
    return {**os.environ, "PYTHONPATH": str(ROOT), **(extra or {})}


@pytest.fixture
def site(tmp_path):
    """A folder with a config.yaml of its own: state/x.json backed up to backups/."""
    folder = tmp_path / "site"
    (folder / "state").mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"backup": {
        "state_files": ["state/x.json"]}}))
    return folder


def configure(folder, **backup):
    doc = yaml.safe_load((folder / "config.yaml").read_text())
    doc["backup"].update(backup)
    (folder / "config.yaml").write_text(yaml.safe_dump(doc))


def cli(folder, *args, prefix=(), env=None):
    command = [*prefix, sys.executable, "-m", "backup_manager", "--config",
               str(folder / "config.yaml"), *map(str, args)]
    return subprocess.run(command, cwd=folder, capture_output=True, text=True,
                          env=_env(env), stdin=subprocess.DEVNULL, timeout=TIMEOUT)


def plant(folder, name, data=None, *, digest=None):
    """A backup with a sidecar, as another process (or a person) could leave it."""
    folder.mkdir(parents=True, exist_ok=True)
    if data is not None:
        (folder / name).write_bytes(data)
    digest = digest or hashlib.sha256(data or b"").hexdigest()
    (folder / (name + ".sha256")).write_text(f"{digest}  {name}\n")


def backups(folder, stem="x"):
    return sorted(p.name for p in folder.glob(f"{stem}_*") if not p.name.endswith(".sha256")
                  and p.is_file() and not p.is_symlink())


def next_name(name):
    """The backup name one microsecond after `name` (a new-style name)."""
    from datetime import timedelta

    from backup_manager.formats import format_backup_name, parse_backup_name

    parsed = parse_backup_name(name, "x", ".json")
    return format_backup_name("x", ".json", parsed.when + timedelta(microseconds=1))


# --- 1. a symlink named like a backup takes no keep_last place --------------------------


@pytest.mark.parametrize("how", ["prune", "backup"])
def test_a_symlink_named_like_the_newest_backup_takes_no_keep_last_place(site, how):
    configure(site, keep_last=3, keep_daily=0)
    state = site / "state" / "x.json"
    bm = BackupManager.from_config(site / "config.yaml")
    with bm.changes("run", "a run that saves x.json four times: one point names the last"):
        for n in range(4):
            state.write_text(json.dumps({"n": n}))
            bm.backup_state_file(state)
    made = backups(site / "backups")
    assert len(made) == 3, "keep_last=3 after each backup"
    elsewhere = site / "elsewhere.json"
    elsewhere.write_text(json.dumps({"planted": True}))
    link = site / "backups" / next_name(made[-1])
    link.symlink_to(elsewhere)
    plant(site / "backups", link.name, elsewhere.read_bytes())
    if how == "backup":
        state.write_text(json.dumps({"n": 4}))
    done = cli(site, how, *(["state/x.json"] if how == "backup" else []))
    assert done.returncode == 0, done.stdout + done.stderr
    kept = backups(site / "backups")
    wanted = made if how == "prune" else made[1:]
    assert set(wanted) <= set(kept), (
        f"a real backup was pruned while a symlink held a keep_last place: {kept}")
    assert len(kept) == 3
    assert link.is_symlink(), "what is no backup is not pruned either"


# --- 5. an I/O error on the first look at the state file is a backup failure ------------


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_an_io_error_on_the_first_look_at_the_state_file_fails_the_backup(site):
    state = site / "state" / "x.json"
    state.write_bytes(rebalance_doc())
    first_look_fails = ["strace", "-f", "-qq", "-o", "/dev/null", "-P", str(state),
                        "-e", "trace=newfstatat,lstat,stat,statx",
                        "-e", "inject=newfstatat,lstat,stat,statx:error=EIO:when=1"]
    done = cli(site, "backup", "state/x.json", prefix=first_look_fails)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Input/output error" in done.stdout + done.stderr
    assert "does not exist" not in done.stdout + done.stderr
    assert not (site / "backups").exists() or backups(site / "backups") == []



# --- 4. leftovers in mirrors are cleaned like those in backups/ -------------------------


def test_a_killed_copys_leftovers_in_a_mirror_go_after_the_grace_period(site):
    import time

    from backup_manager.atomic import temp_name

    configure(site, mirror_dirs=["mirror"])
    state = site / "state" / "x.json"
    state.write_bytes(rebalance_doc())
    assert cli(site, "backup", "state/x.json").returncode == 0
    two_hours_ago = time.time() - 2 * 3600
    stale = "x_2026-01-01_00-00-00.000000Z.json"  # its copy was killed before the sidecar
    leftovers = {}
    for folder in (site / "backups", site / "mirror"):
        leftovers[folder] = [folder / temp_name(stale), folder / stale]
        fresh = folder / temp_name("x_2026-01-02_00-00-00.000000Z.json")
        for path in [*leftovers[folder], fresh]:
            path.write_bytes(b'{"half": ')
        for path in leftovers[folder]:
            os.utime(path, (two_hours_ago, two_hours_ago))
    done = cli(site, "prune")
    assert done.returncode == 0, done.stdout + done.stderr
    for folder, paths in leftovers.items():
        assert [p.name for p in paths if p.exists()] == [], f"leftovers stay in {folder}"
        assert len([p for p in folder.iterdir() if ".tmp-" in p.name]) == 1, \
            f"a copy still at work in {folder} was disturbed"
    assert backups(site / "mirror") == backups(site / "backups") != []


# --- 7. a copy target's history belongs to that target ----------------------------------


def test_a_mistyped_bucket_after_a_working_setup_shows_its_own_first_failure(site, bucket):
    endpoint, good = bucket
    configure(site, cloud_enabled=True, s3_bucket=good, s3_endpoint_url=endpoint,
              s3_region="us-east-1", s3_connect_timeout_seconds=0.5,
              s3_read_timeout_seconds=0.5)
    state = site / "state" / "x.json"
    state.write_bytes(rebalance_doc())
    assert cli(site, "backup", "state/x.json").returncode == 0
    (before,) = json.loads(cli(site, "--json", "status").stdout)["targets"]
    assert before["last_success"] is not None and before["pending"] == 0
    configure(site, s3_bucket=good + "-typo")
    (untried,) = json.loads(cli(site, "--json", "status").stdout)["targets"]
    assert untried["last_success"] is None, "before its first copy, no history of its own"
    state.write_bytes(rebalance_doc(n="after the typo"))
    cli(site, "backup", "state/x.json")
    status = cli(site, "--json", "status")
    doc = json.loads(status.stdout)
    (target,) = doc["targets"]
    assert target["target"].startswith(f"s3://{good}-typo/")
    assert target["last_success"] is None, "the old bucket's success shown under the new name"
    assert "NoSuchBucket" in (target["last_error"] or "")
    kinds = {p["kind"] for p in doc["problems"] if p["subject"] == target["target"]}
    assert "target-never-took-a-copy" in kinds, doc["problems"]
    assert status.returncode == 1
    configure(site, s3_bucket=good)
    synced = cli(site, "--json", "sync")
    (stray,) = json.loads(synced.stdout)["unconfigured_targets"]
    assert stray["pending"] == 2, "the typo's copies are still owed to it, and said so"
    assert cli(site, "sync", "--forget", stray["target"]).returncode == 0
    assert cli(site, "status").returncode == 0, "back on the right bucket, with its history"
    (after,) = json.loads(cli(site, "--json", "status").stdout)["targets"]
    assert after["last_success"] is not None and after["pending"] == 0


# --- 2. a planted huge object is never read whole ---------------------------------------

PEAK_PROBE = """
import runpy, sys
sys.argv = ["backup_manager", *sys.argv[1:]]
try:
    runpy.run_module("backup_manager", run_name="__main__", alter_sys=True)
finally:
    peak = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
    read = next(line for line in open("/proc/self/io") if line.startswith("rchar"))
    print("peak-kib", peak.split()[1], "read-bytes", read.split()[1], file=sys.stderr)
"""


def peak_kib(done):
    return int(done.stderr.rsplit("peak-kib ", 1)[1].split()[0])


def bytes_read(done):
    return int(done.stderr.rsplit("read-bytes ", 1)[1].split()[0])


def test_a_planted_sparse_object_in_a_mirror_is_never_read_whole(site):
    from datetime import UTC, datetime, timedelta

    from backup_manager.formats import format_backup_name

    configure(site, mirror_dirs=["mirror"], keep_last=1, keep_daily=0)
    state = site / "state" / "x.json"
    state.write_bytes(rebalance_doc())
    assert cli(site, "backup", "state/x.json").returncode == 0
    # Named after the backup the next run makes: the mirror's newest, so the prune after
    # that backup looks at it first.
    planted = format_backup_name("x", ".json", datetime.now(UTC) + timedelta(minutes=1))
    with open(site / "mirror" / planted, "wb") as f:
        f.truncate(512 * 1024 * 1024)  # sparse: no disk used, 512 MiB to read
    plant(site / "mirror", planted, digest="0" * 64)
    state.write_bytes(rebalance_doc(n="next"))
    done = subprocess.run([sys.executable, "-c", PEAK_PROBE, "--config",
                           str(site / "config.yaml"), "backup", "state/x.json"], cwd=site,
                          capture_output=True, text=True, env=_env(), timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert peak_kib(done) < 128 * 1024, f"peak RSS {peak_kib(done) // 1024} MiB"
    assert bytes_read(done) < 16 * 1024 * 1024, "read up to the bound: the size says enough"
    verify = cli(site, "verify")
    assert verify.returncode == 1
    (line,) = [line for line in verify.stdout.splitlines() if planted in line]
    assert "too large" in line and "536,870,912 bytes" in line, line


# --- 8. rules no test held ---------------------------------------------------------------


def owe(site, target, name, queued_at):
    """An outbox entry as the outbox writes it, queued at `queued_at`."""
    entry = site / "backups" / ".outbox" / target / (name + ".json")
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.write_text(json.dumps({"queued_at": queued_at.isoformat(), "attempts": 3,
                                 "last_error": "mirror not mounted", "conflict": False}))


def test_status_measures_the_oldest_pending_copy_from_the_oldest(site):
    from datetime import UTC, datetime, timedelta

    configure(site, mirror_dirs=["mirror"])
    state = site / "state" / "x.json"
    state.write_bytes(rebalance_doc())
    assert cli(site, "backup", "state/x.json").returncode == 0
    (target,) = BackupManager.from_config(site / "config.yaml").mirrors
    now = datetime.now(UTC)
    owe(site, target, "x_2025-12-01_00-00-00.000000Z.json", now - timedelta(days=336))
    owe(site, target, "x_2026-11-01_00-00-00.000000Z.json", now - timedelta(minutes=5))
    done = cli(site, "--json", "status", "--max-age-hours", "24")
    (row,) = json.loads(done.stdout)["targets"]
    assert row["oldest_pending_age_seconds"] >= 336 * 86400
    late = [p for p in json.loads(done.stdout)["problems"]
            if p["kind"] == "copies-pending-too-long"]
    assert late and "336" in late[0]["problem"], done.stdout
    assert done.returncode == 1


def _plant_unnamed(folder, name, data):
    """A complete backup that no restore point names (a folder from before points)."""
    plant(folder, name, data)


def test_restore_prefers_new_style_names_to_the_original_modules_across_stores(site):
    configure(site, mirror_dirs=["mirror"])
    today = rebalance_doc(n="today")
    _plant_unnamed(site / "backups", "x_2026-11-30_08-00-00.000000Z.json", today)
    # The original module's names (local time, whole seconds) in a mirror seeded with them.
    _plant_unnamed(site / "mirror", "x_2025-06-01_08-00-00.json", rebalance_doc(n="2025"))
    done = cli(site, "restore", "state/x.json", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (site / "state" / "x.json").read_bytes() == today


def test_restore_takes_this_machines_backup_over_an_s3_object_of_the_same_name(site, bucket):
    import boto3

    endpoint, name = bucket
    configure(site, cloud_enabled=True, s3_bucket=name, s3_endpoint_url=endpoint,
              s3_region="us-east-1")
    backup = "x_2026-11-30_08-00-00.000000Z.json"
    mine, theirs = rebalance_doc(n="this machine"), rebalance_doc(n="another machine")
    _plant_unnamed(site / "backups", backup, mine)
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.put_object(Bucket=name, Key=f"dalio-lite-backups/{backup}", Body=theirs)
    client.put_object(Bucket=name, Key=f"dalio-lite-backups/{backup}.sha256",
                      Body=f"{hashlib.sha256(theirs).hexdigest()}  {backup}\n".encode())
    done = cli(site, "restore", "state/x.json", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (site / "state" / "x.json").read_bytes() == mine


def test_start_up_repairs_a_mirror_holding_a_backup_without_its_sidecar(tmp_path):
    """A mirror that lost a sidecar holds an incomplete backup: after the machine is lost
    it would restore an older state. The next start owes it the copy again."""
    home = tmp_path / "bot"
    home.mkdir()
    shutil.copy(ROOT / "config.yaml", home / "config.yaml")
    configure(home, mirror_dirs=["mirror"])

    def run():
        return subprocess.run([sys.executable, str(ROOT / "dalio_lite.py"), "--config",
                               str(home / "config.yaml")], cwd=home, capture_output=True,
                              text=True, env=_env(), timeout=TIMEOUT)

    assert run().returncode == 0
    newest = BackupManager(home / "backups").list_backups(
        home / "state" / "last_rebalance.json")[0].name
    (home / "mirror" / (newest + ".sha256")).unlink()
    assert run().returncode == 0
    assert (home / "mirror" / (newest + ".sha256")).read_bytes() == \
        (home / "backups" / (newest + ".sha256")).read_bytes()
    live = (home / "state" / "last_rebalance.json").read_bytes()
    shutil.rmtree(home / "backups")
    shutil.rmtree(home / "state")
    configure(home, dir="lost-machine-backups")  # only the mirror is left
    assert cli(home, "restore", "--all", "--yes").returncode == 0
    assert (home / "state" / "last_rebalance.json").read_bytes() == live


# --- 6. a read-only backups/ hides no good backup ---------------------------------------


@pytest.fixture
def bot(tmp_path):
    home = tmp_path / "bot"
    home.mkdir()
    shutil.copy(ROOT / "config.yaml", home / "config.yaml")
    return home


def run_bot(home, *args):
    return subprocess.run([sys.executable, str(ROOT / "dalio_lite.py"), "--config",
                           str(home / "config.yaml"), *args], cwd=home, capture_output=True,
                          text=True, env=_env(), stdin=subprocess.DEVNULL, timeout=TIMEOUT)


@pytest.fixture
def read_only(bot):
    """Make `folder` read-only for everyone, root included: a read-only bind mount of it
    on itself (what a read-only remount of the disk holding it does)."""
    mounted = []

    def make(folder):
        for command in (["mount", "--bind", str(folder), str(folder)],
                        ["mount", "-o", "remount,ro,bind", str(folder)]):
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"cannot bind-mount here (needs root): {done.stderr.strip()}")
            if command[1] == "--bind":
                mounted.append(folder)

    yield make
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_lost_state_file_is_installed_from_a_read_only_backups_folder(bot, read_only):
    assert run_bot(bot).returncode == 0
    live = (bot / "state" / "last_rebalance.json").read_bytes()
    (bot / "state" / "last_rebalance.json").unlink()
    read_only(bot / "backups")
    done = run_bot(bot)
    assert done.returncode == 0, done.stderr
    assert (bot / "state" / "last_rebalance.json").read_bytes() == live
    assert "Read-only file system" in done.stderr, "the backups folder's problem is said"
    status = cli(bot, "status")
    assert status.returncode == 1 and "Read-only file system" in status.stdout, status.stdout


def test_restore_and_the_one_liner_install_from_a_read_only_backups_folder(bot, read_only):
    assert run_bot(bot).returncode == 0
    state = bot / "state" / "last_rebalance.json"
    live = state.read_bytes()
    read_only(bot / "backups")
    state.unlink()
    done = cli(bot, "restore", "state/last_rebalance.json", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert state.read_bytes() == live
    state.unlink()
    one_liner = ("from backup_manager import BackupManager; import sys; "
                 "sys.exit(0 if BackupManager().restore_from_backup("
                 "'state/last_rebalance.json') else 1)")
    done = subprocess.run([sys.executable, "-c", one_liner], cwd=bot, capture_output=True,
                          text=True, env=_env(), timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert state.read_bytes() == live


def test_a_live_file_that_must_be_kept_on_a_read_only_backups_folder_is_a_refusal(bot,
                                                                                read_only):
    assert run_bot(bot).returncode == 0
    state = bot / "state" / "last_rebalance.json"
    state.write_bytes(b"{not json")
    read_only(bot / "backups")
    done = run_bot(bot)
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    assert "refusing to trade" in done.stderr
    assert "Read-only file system" in done.stderr and "corrupt/" in done.stderr, done.stderr
    assert state.read_bytes() == b"{not json", "nothing was replaced"
    status = cli(bot, "status")
    assert status.returncode == 1 and "Read-only file system" in status.stdout, status.stdout


# --- 3. one backup under a clock a year ahead voids no daily history --------------------


def faketime(offset):
    if shutil.which("faketime") is None:
        pytest.skip("faketime is not installed (apt-get install faketime); CI installs it")
    return ["faketime", "-f", offset]


def backup_at(site, offset, n):
    """`backup` in a real process under a clock shifted by `offset` (faketime), of a
    state that records `n`."""
    (site / "state" / "x.json").write_text(json.dumps({"n": n}))
    done = cli(site, "backup", "state/x.json", prefix=faketime(offset),
               env={"FAKETIME_DONT_FAKE_MONOTONIC": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def kept_days(site):
    """The `n` each backup left in backups/ records."""
    return sorted(json.loads((site / "backups" / name).read_text())["n"]
                  for name in backups(site / "backups"))


@pytest.mark.timeout(300)
def test_a_backup_made_a_year_ahead_after_the_history_voids_none_of_it(site):
    for day in range(40, 0, -1):
        backup_at(site, f"-{day}d", -day)
    backup_at(site, "+365d", 365)  # its own prune runs under that clock
    assert kept_days(site) == [*range(-30, 0), 365], "retention_days counted from the glitch"
    assert cli(site, "prune").returncode == 0  # and under the right clock again
    assert kept_days(site) == [*range(-30, 0), 365]
    status = cli(site, "status")
    assert status.returncode == 1
    assert "is stamped in the future" in status.stdout, status.stdout


@pytest.mark.timeout(300)
def test_a_backup_made_a_year_ahead_before_the_history_voids_none_of_it(site):
    backup_at(site, "+365d", 365)
    for day in range(40, 0, -1):  # each named just after the glitched one (promise 9)
        backup_at(site, f"-{day}d", -day)
    assert cli(site, "prune").returncode == 0
    assert kept_days(site) == [*range(-30, 0), 365], \
        "a backup named after the glitch is aged by when it was made"
    status = cli(site, "--json", "status")
    (future,) = [p for p in json.loads(status.stdout)["problems"]
                 if p["kind"] == "stamped-in-future"]
    assert "the 30 backup(s) made since are named just after it" in future["problem"]
    assert future["problem"].startswith(backups(site / "backups")[0])
    verify = cli(site, "verify")
    assert [line for line in verify.stdout.splitlines() if "in the future" in line] == [
        line for line in verify.stdout.splitlines() if backups(site / "backups")[0] in line
        and "in the future" in line], "verify names the glitched backup alone"
