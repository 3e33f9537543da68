"""One history (promises 11 and 12): every case issue "One history" found, through real
processes (the bot, the command line, a moto server on 127.0.0.1, faketime). Each made
the bot trade on stale state, or lose the newest, before restore points."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime

import boto3
import pytest
import yaml

from backup_manager import BackupManager
from tests.helpers import ROOT, FaultProxy, refusal_of

STATE_FILES = ("last_rebalance.json", "paper_account.json", "autopilot_status.json")
TIMEOUT = 120


def _env(extra=None):
    return {**os.environ, "PYTHONPATH": str(ROOT), **(extra or {})}


@pytest.fixture
def home(tmp_path):
    """A DalioLite checkout's config in a folder of its own (paper broker, offline)."""
    folder = tmp_path / "bot"
    folder.mkdir()
    shutil.copy(ROOT / "config.yaml", folder / "config.yaml")
    return folder


def configure(home, **backup):
    doc = yaml.safe_load((home / "config.yaml").read_text())
    doc["backup"].update(backup)
    (home / "config.yaml").write_text(yaml.safe_dump(doc))


def run(home, *args, faketime=None):
    command = [sys.executable, str(ROOT / "dalio_lite.py"), "--config",
               str(home / "config.yaml"), *args]
    env = _env()
    if faketime:
        command = ["faketime", "-f", faketime, *command]
        env["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"
    return subprocess.run(command, cwd=home.parent, capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=TIMEOUT)


def cli(home, *args, python_code=None):
    command = [sys.executable, "-m", "backup_manager", "--config", str(home / "config.yaml"),
               *map(str, args)]
    if python_code is not None:
        command = [sys.executable, "-c", python_code]
    return subprocess.run(command, cwd=home, capture_output=True, text=True, env=_env(),
                          stdin=subprocess.DEVNULL, timeout=TIMEOUT)


def orders_in(proc):
    return [line for line in proc.stderr.splitlines() if "order:" in line]


def state(home, name="last_rebalance.json"):
    return home / "state" / name


def newest_backup(home, name="last_rebalance.json"):
    return BackupManager(home / "backups").list_backups(state(home, name))[0].path


def snapshot(*folders):
    """Every file under the folders: its bytes (what a run that writes nothing keeps)."""
    return {str(p): p.read_bytes() for folder in folders if folder.exists()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def move_prices(home):
    """Prices that drift the portfolio past the threshold: a run that may trade does."""
    config = home / "config.yaml"
    config.write_text(config.read_text().replace("VTI: 250.0", "VTI: 400.0"))


def two_rebalances(home):
    """A first run (restore point 1 holds its last rebalance), then a rebalance recorded
    later (a newer point holds it); returns (older bytes, newer bytes) of the file."""
    assert run(home).returncode == 0
    older = state(home).read_bytes()
    later = {"timestamp": datetime.now(UTC).isoformat()}
    state(home).write_text(json.dumps(later))
    assert run(home).returncode == 0  # caught up into a point of its own
    return older, state(home).read_bytes()


# --- a damaged newest backup ----------------------------------------------------------


def test_bit_rot_in_the_newest_backup_never_makes_restore_roll_a_valid_file_back(home):
    _, newer = two_rebalances(home)
    damaged = newest_backup(home)
    damaged.write_bytes(damaged.read_bytes()[:-3])
    status = cli(home, "--json", "status")
    assert status.returncode == 1
    kinds = {p["kind"] for p in json.loads(status.stdout)["problems"]}
    assert "newest-backup-damaged" in kinds, "a damaged newest backup is never healthy"
    done = cli(home, "restore", "state/last_rebalance.json", "--yes")
    assert done.returncode == 0, done.stderr
    assert "already holds the newest restore point's" in done.stdout
    assert "repair it from the live file" in done.stdout
    assert state(home).read_bytes() == newer, "restore rolled a valid file back"
    assert not list((home / "backups").glob("replaced/*")), "nothing was replaced"
    repair = done.stdout.split("repair it from the live file: ")[1].strip()
    assert subprocess.run(repair, shell=True, cwd=home, env=_env()).returncode == 0
    assert cli(home, "status").returncode == 0, "the repaired backup makes status OK"


def test_a_lost_file_with_a_damaged_newest_backup_refuses_and_writes_nothing(home):
    _, newer = two_rebalances(home)
    damaged = newest_backup(home)
    good = damaged.read_bytes()
    damaged.write_bytes(good[:-3])
    state(home).unlink()
    move_prices(home)
    before = snapshot(home / "state", home / "backups")
    refused = run(home)
    assert refused.returncode == 3, refused.stderr
    assert orders_in(refused) == []
    after = snapshot(home / "state", home / "backups")
    assert {k: v for k, v in after.items() if not k.endswith(".recovery.json")} == before, \
        "the refusing run saved something: a backup, a point, an installed file"
    again = run(home)
    assert again.returncode == 3 and orders_in(again) == [], "the next run faces the same doubt"
    damaged.write_bytes(good)  # repaired (from another copy)
    fixed = run(home)
    assert fixed.returncode == 0, fixed.stderr
    assert orders_in(fixed) == [], "the newest rebalance is back: inside min_days_between"
    assert state(home).read_bytes() == newer


def test_status_says_problem_while_the_host_refuses(home):
    two_rebalances(home)
    newest_backup(home).write_bytes(b"{}")
    state(home).unlink()
    refused = run(home)
    assert refused.returncode == 3
    status = cli(home, "--json", "status")
    assert status.returncode == 1, "status said OK while every run refuses"
    (problem,) = [p for p in json.loads(status.stdout)["problems"]
                  if p["kind"] == "host-refuses"]
    _, _, commands = refusal_of(refused.stderr)
    assert all(c in problem["fix"] for c in commands), "the refusal's commands are the fix"
    host = run(home, "--status")
    assert host.returncode == 1
    assert any(p["kind"] == "host-refuses" for p in json.loads(host.stdout)["problems"])
    metrics = cli(home, "status", "--format", "prometheus").stdout
    assert "dalio_backup_status_ok 0" in metrics
    assert 'dalio_backup_problem{kind="host-refuses",subject="site"} 1' in metrics


def test_the_spec_one_liner_past_a_damaged_newest_backup_is_a_rollback_the_host_refuses(home):
    older, _ = two_rebalances(home)
    damaged = newest_backup(home)
    damaged.write_bytes(damaged.read_bytes()[:-3])
    state(home).unlink()
    move_prices(home)
    one_liner = ("from backup_manager import BackupManager\nbm = BackupManager()\n"
                 "success = bm.restore_from_backup('state/last_rebalance.json')\n"
                 "print('Restore:', 'SUCCESS' if success else 'FAILED')\n")
    done = cli(home, python_code=one_liner)
    assert "Restore: SUCCESS" in done.stdout, done.stderr
    assert state(home).read_bytes() == older
    assert "older than the newest" in done.stderr and "--accept-rollback" in done.stderr
    refused = run(home)
    assert refused.returncode == 3, "the daily run traded on the older rebalance"
    assert orders_in(refused) == []
    assert "older than the newest restore point" in refused.stderr


def test_restore_of_an_older_backup_then_a_dry_run_then_the_undo(home):
    older, newer = two_rebalances(home)
    move_prices(home)
    stamp = BackupManager(home / "backups").list_backups(state(home))[-1].name[
        len("last_rebalance_"):-len(".json")]
    back = cli(home, "restore", "state/last_rebalance.json", "--timestamp", stamp, "--yes")
    assert back.returncode == 0, back.stderr
    assert "ROLLBACK" in back.stdout and "--accept-rollback" in back.stdout
    assert state(home).read_bytes() == older
    before = snapshot(home / "state", home / "backups")
    dry = run(home, "--dry-run")
    assert dry.returncode == 3 and orders_in(dry) == []
    assert all("dry run" in line for line in dry.stderr.splitlines()
               if " dalio_lite: " in line or " backup_manager: " in line), dry.stderr
    assert snapshot(home / "state", home / "backups") == before, "a dry run wrote something"
    undo = cli(home, "restore", "state/last_rebalance.json", "--yes")
    assert undo.returncode == 0, undo.stderr
    assert state(home).read_bytes() == newer, "the documented undo found nothing to do"
    after = run(home)
    assert after.returncode == 0 and orders_in(after) == []


# --- stores that cannot be seen -------------------------------------------------------


@pytest.fixture
def bucket_behind_proxy(moto_server, request):
    import uuid

    name = f"history-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(
        Bucket=name)
    port = int(moto_server.rsplit(":", 1)[1])
    proxy = FaultProxy(port)
    yield proxy, name
    proxy.close()


def test_s3_answering_503_while_a_mirror_answers_is_a_refusal_on_a_new_machine(
        tmp_path, home, bucket_behind_proxy):
    proxy, bucket = bucket_behind_proxy
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    configure(home, mirror_dirs=[str(mirror)], cloud_enabled=True, s3_bucket=bucket,
              s3_endpoint_url=proxy.url, s3_region="us-east-1")
    assert run(home).returncode == 0
    stale_mirror = mirror.with_name("mirror-at-day-one")
    shutil.copytree(mirror, stale_mirror)  # the mirror stops syncing: it keeps day one
    later = {"timestamp": datetime.now(UTC).isoformat()}
    state(home).write_text(json.dumps(later))
    assert run(home).returncode == 0
    shutil.rmtree(mirror)
    stale_mirror.rename(mirror)
    new = tmp_path / "new-machine"
    new.mkdir()
    shutil.copy(home / "config.yaml", new / "config.yaml")
    (new / "config.yaml").write_text((new / "config.yaml").read_text().replace(
        "- mirror", f"- {mirror}").replace(str(home / "mirror"), str(mirror)))
    configure(new, mirror_dirs=[str(mirror)])
    proxy.reads_503 = True
    move_prices(new)
    refused = run(new)
    assert refused.returncode == 3, refused.stderr
    assert orders_in(refused) == [] and not state(new).exists()
    assert f"s3://{bucket}" in refused.stderr and "cannot be seen" in refused.stderr
    _, _, commands = refusal_of(refused.stderr)
    assert any("--from-reachable" in c for c in commands)
    proxy.reads_503 = False
    restored = run(new)
    assert restored.returncode == 0, restored.stderr
    assert state(new).read_bytes() == state(home).read_bytes(), "the newest point, from S3"
    assert orders_in(restored) == []


def test_every_live_file_valid_and_s3_unseen_trades_and_status_says_so(
        home, bucket_behind_proxy):
    proxy, bucket = bucket_behind_proxy
    configure(home, cloud_enabled=True, s3_bucket=bucket, s3_endpoint_url=proxy.url,
              s3_region="us-east-1")
    assert run(home).returncode == 0
    proxy.reads_503 = True
    done = run(home)
    assert done.returncode == 0, "an unseen store blocks nothing when every file is live"
    status = cli(home, "--json", "status")
    assert status.returncode == 1
    (unseen,) = [p for p in json.loads(status.stdout)["problems"] if p["kind"] == "store-unseen"]
    assert unseen["subject"] == "s3" and "503" in unseen["problem"] or "SlowDown" in \
        unseen["problem"]
    proxy.reads_503 = False
    assert run(home).returncode == 0
    assert cli(home, "status").returncode == 0, "the next run that sees it clears it"


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_a_backups_folder_that_can_be_written_but_not_listed(home):
    assert run(home).returncode == 0
    state(home).unlink()
    unlistable = ["strace", "-f", "-qq", "-o", "/dev/null", "-P", str(home / "backups"),
                  "-e", "trace=getdents64", "-e", "inject=getdents64:error=EACCES"]
    command = [*unlistable, sys.executable, str(ROOT / "dalio_lite.py"), "--config",
               str(home / "config.yaml")]
    refused = subprocess.run(command, cwd=home.parent, capture_output=True, text=True,
                             env=_env(), timeout=TIMEOUT)
    assert refused.returncode == 3, refused.stderr
    assert "Traceback" not in refused.stderr
    assert "backups cannot be seen" in refused.stderr and "Permission denied" in refused.stderr
    record = json.loads((home / "backups" / ".recovery.json").read_text())
    assert record["refused"]["kind"] == "unseen", "the refusal is recorded for status"
    assert not state(home).exists()


def test_a_new_machine_gets_all_three_files_from_one_moment(tmp_path, home, moto_server):
    """The bucket also holds a newer backup of one file that no point names (a run killed
    between its save and its commit): the new machine gets the point, whole."""
    import uuid

    bucket = f"moment-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(
        Bucket=bucket)
    configure(home, cloud_enabled=True, s3_bucket=bucket, s3_endpoint_url=moto_server,
              s3_region="us-east-1")
    assert run(home).returncode == 0
    point = {n: state(home, n).read_bytes() for n in STATE_FILES}
    bm = BackupManager.from_config(home / "config.yaml")
    account = json.loads(point["paper_account.json"])
    account["cash"] += 123.0
    state(home, "paper_account.json").write_text(json.dumps(account))
    lost = []
    with bm.changes("run", "a run killed before its commit", commit_failed=lost.append):
        unnamed = bm.backup_state_file(state(home, "paper_account.json"))
        bm.store.create_object = lambda *a, **k: (_ for _ in ()).throw(OSError(5, "EIO"))
    assert lost and unnamed.exists(), "a newer backup that no point names"
    assert BackupManager.from_config(home / "config.yaml").sync().pending == 0
    assert f"dalio-lite-backups/{unnamed.name}" in {o["Key"] for o in boto3.client(
        "s3", endpoint_url=moto_server, region_name="us-east-1").list_objects_v2(
        Bucket=bucket)["Contents"]}
    new = tmp_path / "new-machine"
    new.mkdir()
    shutil.copy(home / "config.yaml", new / "config.yaml")
    done = run(new)
    assert done.returncode == 0, done.stderr
    for name in STATE_FILES[:2]:  # the run then writes its own autopilot_status.json
        assert state(new, name).read_bytes() == point[name], f"{name} from another moment"
    assert f"from backup {unnamed.name}" not in done.stderr
    assert orders_in(done) == []


def test_a_refusal_has_one_shape_and_every_command_it_prints_runs(tmp_path, home):
    """Item 1 of "The operator's path, round two": a headline, one line per file, then
    numbered commands that each work in that situation; the same in `status`."""
    two_rebalances(home)
    newest_backup(home).write_bytes(b"{}")
    state(home).unlink()
    refused = run(home)
    assert refused.returncode == 3
    headline, reasons, commands = refusal_of(refused.stderr)
    assert headline == "the newest restore point's state is held by no store"
    assert len(reasons) == 1 and reasons[0].startswith(str(state(home)))
    assert len(commands) >= 3 and max(map(len, refused.stderr.splitlines())) < 400
    shown = cli(home, "status").stdout.splitlines()
    start = shown.index(f"PROBLEM: the host refuses to trade: {headline}")
    assert shown[start + 1].strip() == reasons[0]
    assert shown[start + 2].strip() == "fix, one of:"
    listed = shown[start + 3:start + 3 + len(commands)]
    assert [line.split(". ", 1)[1].split("  # ")[0] for line in listed] == commands
    for n, command in enumerate(commands):
        site = tmp_path / f"site-{n}"
        shutil.copytree(home.parent, site)  # each command on its own copy of the site
        local = command.replace(str(home.parent), str(site))
        done = subprocess.run(local, shell=True, cwd=site, capture_output=True, text=True,
                              env=_env(), timeout=TIMEOUT)
        assert done.returncode != 2 and "Traceback" not in done.stderr, (command, done.stderr)
        assert "usage:" not in done.stderr, command
