"""The operator command line, run as a real process: python -m backup_manager."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from backup_manager.cli import build_parser, plain_backup
from backup_manager.formats import format_backup_name
from tests.helpers import ROOT, rebalance_doc, refused_port


def cli(folder, *args, stdin=subprocess.DEVNULL):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "backup_manager", *args], cwd=folder,
                          capture_output=True, text=True, env=env, stdin=stdin, timeout=120)


@pytest.fixture
def healthy(project):
    for name in ("last_rebalance.json", "paper_account.json"):
        doc = rebalance_doc() if name == "last_rebalance.json" else b'{"cash": 1.0}'
        (project / "state" / name).write_bytes(doc)
        assert cli(project, "backup", f"state/{name}").returncode == 0
    return project


def snapshot(folder):
    return {p: p.read_bytes() for p in Path(folder).rglob("*") if p.is_file()}


@pytest.mark.parametrize("args", [["list"], ["list", "state/last_rebalance.json"],
                                  ["backup", "state/last_rebalance.json"], ["verify"],
                                  ["prune"], ["prune", "--dry-run"], ["status"], ["sync"],
                                  ["drill"], ["restore", "state/last_rebalance.json"]])
def test_every_command_exits_0_on_a_healthy_folder(healthy, args):
    proc = cli(healthy, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def cli_json(folder, *args):
    """Run with --json; (exit code, the one JSON document printed)."""
    proc = cli(folder, "--json", *args)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def backup_files(folder, stem):
    return sorted(p for p in (folder / "backups").glob(f"{stem}_*.json"))


def damage(path):
    path.write_bytes(path.read_bytes().replace(b"1.0", b"2.0"))


def test_json_list_gives_each_backup_with_its_health(healthy):
    (paper,) = backup_files(healthy, "paper_account")
    damage(paper)
    code, doc = cli_json(healthy, "list")
    assert code == 0
    by_file = {entry["state_file"]: entry["backups"] for entry in doc}
    assert sorted(by_file) == ["last_rebalance.json", "paper_account.json"]
    for stem, health in (("last_rebalance", "ok"), ("paper_account", "damaged")):
        (path,) = backup_files(healthy, stem)
        (entry,) = by_file[stem + ".json"]
        assert (entry["name"], entry["size"], entry["status"], entry["cloud"]) == \
            (path.name, path.stat().st_size, health, "-")
        assert format_backup_name(stem, ".json", datetime.fromisoformat(entry["time"])) == \
            path.name
        assert 0 <= entry["age_seconds"] < 3600


def test_json_verify_lists_each_problem(healthy):
    assert cli_json(healthy, "verify") == (0, {"ok": True, "checked": 2, "problems": []})
    (paper,) = backup_files(healthy, "paper_account")
    damage(paper)
    code, doc = cli_json(healthy, "verify")
    assert code == 1
    assert (doc["ok"], doc["checked"]) == (False, 2)
    (problem,) = doc["problems"]
    assert (problem["location"], problem["name"], problem["status"]) == \
        ("backups", paper.name, "checksum mismatch")


def test_json_prune_dry_run_gives_the_plan_and_deletes_nothing(healthy):
    from backup_manager import BackupManager

    roomy = BackupManager(healthy / "backups", keep_last=100)
    for i in range(12):
        (healthy / "state" / "last_rebalance.json").write_bytes(rebalance_doc(n=i))
        roomy.backup_state_file(healthy / "state" / "last_rebalance.json")
    before = snapshot(healthy / "backups")
    code, doc = cli_json(healthy, "prune", "--dry-run")
    assert code == 0 and doc["dry_run"] is True
    newest_first = [p.name for p in reversed(backup_files(healthy, "last_rebalance"))]
    plan = {d["name"]: (d["keep"], d["reasons"]) for d in doc["decisions"]}
    points = sorted(p.name for p in (healthy / "backups").glob("point-*.json"))
    assert sorted(plan) == sorted(newest_first + points +
                                  [backup_files(healthy, "paper_account")[0].name])
    assert [plan[n][0] for n in points] == [False] * (len(points) - 10) + [True] * 10, \
        "restore points by the same rules: keep_last 10"
    assert [plan[n][0] for n in newest_first] == [True] * 10 + [False] * 3, "keep_last: 10"
    assert plan[newest_first[0]][1][0] == "keep_last: 1 of the 10 newest"
    assert "newest valid backup" in plan[newest_first[0]][1]
    assert plan[newest_first[-1]][1][-1] == "not among the 10 newest", \
        "each reason is one item of a list, never text to split"
    assert snapshot(healthy / "backups") == before


def test_prune_table_gives_each_file_its_reasons_in_words(healthy):
    proc = cli(healthy, "prune", "--dry-run")
    (newest,) = backup_files(healthy, "last_rebalance")
    day = newest.name[len("last_rebalance_"):][:10]
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["ACTION", "NAME", "REASONS"]
    row = next(line for line in lines if newest.name in line)
    assert row.split(None, 2) == ["keep", newest.name, f"keep_last: 1 of the 10 newest; "
                                  f"keep_daily: newest of {day}; newest valid backup"]


def test_json_status_gives_newest_valid_backup_per_file(healthy):
    code, doc = cli_json(healthy, "status")
    assert code == 0
    assert (doc["ok"], doc["problems"], doc["targets"], doc["last_backup_error"]) == \
        (True, [], [], None)
    assert doc["disk_bytes"] == sum(p.stat().st_size for p in (healthy / "backups").iterdir()
                                    if p.is_file())
    for entry, stem in zip(doc["state_files"], ("last_rebalance", "paper_account"), strict=True):
        (path,) = backup_files(healthy, stem)
        assert (entry["state_file"], entry["newest_valid"], entry["backups"],
                entry["complete"]) == (stem + ".json", path.name, 1, 1)
        assert 0 <= entry["newest_valid_age_seconds"] < 3600


def test_json_drill_names_what_each_file_would_be_recovered_from(healthy):
    code, doc = cli_json(healthy, "drill")
    assert code == 0 and doc["ok"] is True
    for entry, stem in zip(doc["state_files"], ("last_rebalance", "paper_account"), strict=True):
        (path,) = backup_files(healthy, stem)
        assert (entry["state_file"], entry["ok"], entry["backup"], entry["source"],
                entry["error"]) == (stem + ".json", True, path.name, "local", None)


def test_json_backup_names_each_new_backup(healthy):
    code, doc = cli_json(healthy, "backup", "state/last_rebalance.json", "state/missing.json")
    assert code == 1
    made, missing = doc
    assert (made["state_file"], made["error"]) == ("state/last_rebalance.json", None)
    assert (healthy / "backups" / made["backup"]).read_bytes() == \
        (healthy / "state" / "last_rebalance.json").read_bytes()
    assert made["backup"] == backup_files(healthy, "last_rebalance")[-1].name
    assert missing == {"state_file": "state/missing.json", "backup": None,
                       "error": "does not exist"}


def test_json_restore_dry_run_says_what_would_happen(healthy):
    live = healthy / "state" / "last_rebalance.json"
    live.write_bytes(b"garbage")
    code, doc = cli_json(healthy, "restore", "state/last_rebalance.json", "--dry-run")
    assert code == 0
    (path,) = backup_files(healthy, "last_rebalance")
    assert {k: doc[k] for k in ("state_file", "backup", "source", "replaces", "changed",
                                "dry_run", "restored")} == {
        "state_file": "state/last_rebalance.json", "backup": path.name, "source": "local",
        "replaces": "invalid", "changed": True, "dry_run": True, "restored": False}
    assert live.read_bytes() == b"garbage"


def test_json_sync_counts_copies(healthy):
    drive = healthy / "drive"
    mirror = drive / "mirror"
    (healthy / "config.yaml").write_text(f"backup:\n  mirror_dirs: [{mirror}]\n")
    code, doc = cli_json(healthy, "sync")
    # A mirror that cannot be listed is not asked what it lacks: nothing is queued
    # blind, and the error says why.
    assert (code, doc["copied"], doc["pending"]) == (1, 0, 0), "the drive is not mounted"
    assert doc["errors"] and all("not mounted" in e for e in doc["errors"])
    drive.mkdir()
    points = sorted(p.name for p in (healthy / "backups").glob("point-*.json"))
    assert cli_json(healthy, "sync") == (0, {"copied": 2 + len(points), "pending": 0,
                                          "errors": [], "unconfigured_targets": []})
    assert sorted(p.name for p in mirror.iterdir()) == sorted(
        n for name in [backup_files(healthy, stem)[0].name for stem in
                       ("last_rebalance", "paper_account")] + points
        for n in (name, name + ".sha256"))
    assert cli_json(healthy, "sync") == (0, {"copied": 0, "pending": 0, "errors": [],
                                          "unconfigured_targets": []})


def test_list_shows_status_per_backup(healthy):
    names = sorted((healthy / "backups").glob("last_rebalance_*.json"))
    names[0].with_name(names[0].name + ".sha256").unlink()
    out = cli(healthy, "list", "state/last_rebalance.json").stdout
    assert "incomplete" in out and names[0].name in out


def test_backup_prints_new_names(healthy):
    proc = cli(healthy, "backup", "state/last_rebalance.json", "state/paper_account.json")
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("state/last_rebalance.json: last_rebalance_")
    assert lines[1].startswith("state/paper_account.json: paper_account_")


def test_backup_of_invalid_or_missing_file_fails_clearly(healthy):
    (healthy / "state" / "last_rebalance.json").write_text("{oops")
    proc = cli(healthy, "backup", "state/last_rebalance.json", "state/missing.json")
    assert proc.returncode == 1
    assert "not valid JSON" in proc.stdout and "does not exist" in proc.stdout


def test_verify_and_status_name_the_damaged_file(healthy):
    for path in (healthy / "backups").glob("last_rebalance_*.json"):
        path.write_bytes(b"{}")
    verify = cli(healthy, "verify")
    assert verify.returncode == 1
    damaged = next((healthy / "backups").glob("last_rebalance_*.json")).name
    assert f"checksum mismatch: backups/{damaged}" in verify.stdout
    status = cli(healthy, "status")
    assert status.returncode == 1
    assert "last_rebalance.json has no valid backup" in status.stdout


def test_drill_fails_only_when_a_file_cannot_be_recovered(healthy):
    newest = sorted((healthy / "backups").glob("last_rebalance_*.json"))[-1]
    # Another backup holding the same bytes (a repair, a copy back from a mirror): the
    # newest restore point's state is still there when the backup it names is damaged.
    same = newest.read_bytes()
    name = format_backup_name("last_rebalance", ".json",
                              datetime.now(UTC) - timedelta(days=1))
    (healthy / "backups" / name).write_bytes(same)
    (healthy / "backups" / (name + ".sha256")).write_text(
        f"{hashlib.sha256(same).hexdigest()}  {name}\n")
    newest.write_bytes(b"{}")
    partly = cli(healthy, "drill")
    assert partly.returncode == 0, partly.stdout + partly.stderr
    assert name in partly.stdout
    (healthy / "backups" / name).write_bytes(b"{}")
    broken = cli(healthy, "drill")
    assert broken.returncode == 1
    assert "cannot be recovered" in broken.stdout


def test_drill_changes_nothing_live(healthy):
    before = snapshot(healthy / "state")
    backups_before = {p.name for p in (healthy / "backups").iterdir()}
    assert cli(healthy, "drill").returncode == 0
    assert snapshot(healthy / "state") == before
    assert {p.name for p in (healthy / "backups").iterdir()} == backups_before


def test_restore_dry_run_changes_no_byte(healthy):
    (healthy / "state" / "last_rebalance.json").write_bytes(b"garbage")
    before = snapshot(healthy)
    proc = cli(healthy, "restore", "state/last_rebalance.json", "--dry-run")
    assert proc.returncode == 0
    assert "an invalid file" in proc.stdout
    assert snapshot(healthy) == before


def test_restore_over_valid_state_needs_yes_without_a_tty(healthy):
    live = healthy / "state" / "last_rebalance.json"
    live.write_bytes(rebalance_doc(n="newer, valid"))
    refused = cli(healthy, "restore", "state/last_rebalance.json")
    assert refused.returncode == 2
    assert "--yes" in refused.stderr
    assert b"newer, valid" in live.read_bytes()
    done = cli(healthy, "restore", "state/last_rebalance.json", "--yes")
    assert done.returncode == 0, done.stderr
    assert b"newer" not in live.read_bytes()
    assert "kept as " in done.stdout and "replaced/last_rebalance_" in done.stdout


def test_restore_of_invalid_state_needs_no_confirmation(healthy):
    (healthy / "state" / "last_rebalance.json").write_bytes(b"garbage")
    done = cli(healthy, "restore", "state/last_rebalance.json")
    assert done.returncode == 0, done.stderr
    assert "corrupt/" in done.stdout


def test_restore_with_nothing_valid_exits_1(project):
    proc = cli(project, "restore", "state/last_rebalance.json")
    assert proc.returncode == 1
    assert "no valid backup" in proc.stderr + proc.stdout


@pytest.mark.parametrize("args,message", [
    (["restore", "state/last_rebalance.json", "--timestamp", "2026-*"], "timestamp prefix"),
    (["--config", "missing.yaml", "status"], "does not exist"),
    (["status", "--max-age-hours", "-1"], "max-age-hours"),
    (["frobnicate"], "invalid choice"),
])
def test_usage_errors_exit_2_without_traceback(healthy, args, message):
    proc = cli(healthy, *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_config_key_exits_2(healthy):
    (healthy / "config.yaml").write_text("backup:\n  keep_lats: 3\n")
    proc = cli(healthy, "status")
    assert proc.returncode == 2
    assert "keep_lats" in proc.stderr and "Traceback" not in proc.stderr


def test_status_max_age_flags_a_stale_backup(project):
    stale = rebalance_doc()
    name = format_backup_name("last_rebalance", ".json",
                              datetime.now(UTC) - timedelta(hours=30))
    (project / "backups").mkdir()
    (project / "backups" / name).write_bytes(stale)
    (project / "backups" / (name + ".sha256")).write_text(
        f"{hashlib.sha256(stale).hexdigest()}  {name}\n")
    assert cli(project, "status", "--max-age-hours", "48").returncode == 0
    proc = cli(project, "--json", "status", "--max-age-hours", "24")
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    (entry,) = doc["state_files"]
    assert 29.9 * 3600 < entry["newest_valid_age_seconds"] < 30.1 * 3600
    (problem,) = doc["problems"]
    assert problem["problem"] == "last_rebalance.json: newest valid backup is 30.0h old"
    assert "-m backup_manager backup" in problem["fix"]



def write_config(folder, **backup):
    doc = yaml.safe_load((ROOT / "config.yaml").read_text())
    doc["backup"].update(backup)
    (folder / "config.yaml").write_text(yaml.safe_dump(doc))


def test_status_max_age_flags_an_old_pending_upload(project, state_file):
    write_config(project, cloud_enabled=True, s3_bucket="b", s3_region="us-east-1",
                 s3_endpoint_url=f"http://127.0.0.1:{refused_port()}",
                 state_files=["state/last_rebalance.json"])
    assert cli(project, "backup", "state/last_rebalance.json").returncode == 0
    time.sleep(1.0)
    proc = cli(project, "--json", "status", "--max-age-hours", "0.0002")
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["targets"][0]["pending"] == 2, "the backup and its restore point"
    assert doc["targets"][0]["oldest_pending_age_seconds"] >= 1.0
    assert any("pending for" in p["problem"] and "sync" in p["fix"] for p in doc["problems"])
    human = cli(project, "status")
    assert "2 pending" in human.stdout and human.returncode == 1
    assert "never took one" in human.stdout, "a target that never took a copy is a problem"
    sync = cli(project, "sync")
    assert sync.returncode == 1 and "pending 2" in sync.stdout


def test_status_shows_host_backup_error_through_the_status_hook(healthy):
    (healthy / "state" / "autopilot_status.json").write_text(json.dumps(
        {"last_backup_error": "2026-11-01 disk full"}))
    assert "disk full" not in cli(healthy, "status").stdout, "no config: no host to ask"
    write_config(healthy)  # the shipped config names dalio_lite's hook
    proc = cli(healthy, "--json", "status")
    assert json.loads(proc.stdout)["last_backup_error"] == "2026-11-01 disk full"
    assert "disk full" in cli(healthy, "status").stdout


def test_cloud_drill_from_s3_alone(project, state_file, bucket):
    endpoint, name = bucket
    write_config(project, cloud_enabled=True, s3_bucket=name, s3_region="us-east-1",
                 s3_endpoint_url=endpoint, state_files=["state/last_rebalance.json"])
    assert cli(project, "backup", "state/last_rebalance.json").returncode == 0
    shutil.rmtree(project / "backups")
    proc = cli(project, "--json", "drill", "--cloud")
    assert proc.returncode == 0, proc.stderr
    (entry,) = json.loads(proc.stdout)["state_files"]
    assert entry["ok"] and entry["source"] == "s3" and entry["seconds"] > 0
    assert not (project / "backups").exists(), "the drill leaves the live folders alone"
    listing = cli(project, "list")
    assert listing.returncode == 0


def test_sync_fails_when_the_cloud_cannot_be_listed(project, state_file):
    assert cli(project, "backup", "state/last_rebalance.json").returncode == 0
    write_config(project, cloud_enabled=True, s3_bucket="b", s3_region="us-east-1",
                 s3_endpoint_url=f"http://127.0.0.1:{refused_port()}")
    proc = cli(project, "sync")
    assert proc.returncode == 1
    assert "cannot list" in proc.stderr


def test_sync_shows_progress_for_many(project, state_file, bucket):
    for i in range(5):
        state_file.write_bytes(rebalance_doc(n=i))
        assert cli(project, "backup", "state/last_rebalance.json").returncode == 0
    endpoint, name = bucket
    write_config(project, cloud_enabled=True, s3_bucket=name, s3_region="us-east-1",
                 s3_endpoint_url=endpoint)
    proc = cli(project, "sync")
    assert proc.returncode == 0, proc.stderr
    # Five backups and their five restore points.
    assert "sync: 10/10 copies tried" in proc.stderr and "copied 10, pending 0" in proc.stdout
    assert cli(project, "verify", "--cloud").returncode == 0


def test_console_script_is_installed_next_to_python():
    script = Path(sys.executable).with_name("dalio-backup")
    if not script.exists():
        pytest.skip("project not installed in this interpreter's environment")
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "drill" in proc.stdout


@pytest.mark.parametrize("argv", [["backup", "state/a.json"], ["backup", "a", "b c", "ü.json"]])
def test_plain_backup_line_reads_as_argparse_reads_it(argv):
    assert vars(plain_backup(argv)) == vars(build_parser().parse_args(argv))


@pytest.mark.parametrize("argv", [["backup"], ["backup", "--json", "a"], ["--json", "backup", "a"],
                                  ["backup", "a", "-v"], ["backup", "-"], ["restore", "a"], []])
def test_any_other_line_goes_to_argparse(argv):
    assert plain_backup(argv) is None
