"""The operator's path in an emergency (issue 13), each step run as the operator runs it:
the real command line in a subprocess, from a folder that is not the bot's, with
--config. Every test checks what the person sees (exit code, stdout, stderr) and
that nothing was created outside the bot's configured folders."""

from __future__ import annotations

import json
import os
import pty
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT, rebalance_doc, refused_port

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
STATE_FILES = ("last_rebalance.json", "paper_account.json", "autopilot_status.json")


@pytest.fixture
def bot(tmp_path):
    """A DalioLite installation after its first run: the shipped config.yaml and
    dalio_lite.py in their own folder, with state/ and backups/."""
    home = tmp_path / "bot"
    home.mkdir()
    shutil.copy(ROOT / "config.yaml", home / "config.yaml")
    shutil.copy(ROOT / "dalio_lite.py", home / "dalio_lite.py")
    first = dalio(home)
    assert first.returncode == 0, first.stderr
    return home


@pytest.fixture
def elsewhere(tmp_path):
    """The operator's working directory: not the bot's folder."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return folder


def dalio(home, *args, **kwargs):
    if "stdout" not in kwargs:
        kwargs["capture_output"] = True
    return subprocess.run([sys.executable, str(home / "dalio_lite.py"), "--config",
                           str(home / "config.yaml"), *args], cwd=home.parent, env=ENV,
                          text=True, timeout=60, **kwargs)


def cli(cwd, *args, config=None, **kwargs):
    """python -m backup_manager [--config CONFIG] ARGS, run in `cwd`."""
    options = ["--config", str(config)] if config else []
    if "stdout" not in kwargs:
        kwargs["capture_output"] = True
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run([sys.executable, "-m", "backup_manager", *options, *args], cwd=cwd,
                          env=ENV, text=True, timeout=60, **kwargs)


def run_printed(command, cwd):
    """Run a command exactly as the tool printed it."""
    return subprocess.run(shlex.split(command), cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=60)


def set_backup(home, **keys):
    config = home / "config.yaml"
    doc = yaml.safe_load(config.read_text())
    doc["backup"].update(keys)
    config.write_text(yaml.safe_dump(doc))


def files(root):
    return {p for p in Path(root).rglob("*") if not p.is_dir()}


class Untouched:
    """Files under `root` that appear outside the `allowed` folders fail the test."""

    def __init__(self, root, *allowed):
        self.root, self.allowed = Path(root), [Path(a) for a in allowed]
        self.before = files(root)

    def check(self):
        new = files(self.root) - self.before
        stray = sorted(str(p) for p in new
                       if not any(a == p or a in p.parents for a in self.allowed))
        assert stray == [], "created outside the configured folders"


@pytest.fixture
def drive(tmp_path):
    """Where a mirror folder goes: a drive that is not mounted until a test creates it."""
    return tmp_path / "drive"


@pytest.fixture
def untouched(tmp_path, bot, drive):
    guard = Untouched(tmp_path, bot / "state", bot / "backups", drive)
    yield guard
    guard.check()


def live_arg(home, name="last_rebalance.json"):
    """A state file by its absolute path: what every version of the command line takes."""
    return str(home / "state" / name)


def backups_of(home, stem):
    return sorted((home / "backups").glob(f"{stem}_*.json"))


# --- 1. a relative STATE_FILE means the configured state file ----------------------------


def test_restore_from_another_folder_restores_the_bots_file(bot, elsewhere, untouched):
    live = bot / "state" / "last_rebalance.json"
    saved = live.read_bytes()
    live.unlink()
    done = cli(elsewhere, "restore", "state/last_rebalance.json", "--yes",
               config=bot / "config.yaml")
    assert done.returncode == 0, done.stderr
    assert "restored state/last_rebalance.json from last_rebalance_" in done.stdout
    assert live.read_bytes() == saved
    assert list(elsewhere.iterdir()) == [], "nothing restored into the working directory"


@pytest.mark.parametrize("given", ["last_rebalance.json", "state/last_rebalance.json"])
def test_a_configured_file_is_named_by_its_path_or_file_name(bot, elsewhere, untouched, given):
    expected = {
        "list": "state/last_rebalance.json: 1 backup(s) in backups\n",
        "verify": "checked 1 file(s): all ok\n",
        # the bot's live file, not a missing one in the working directory:
        "restore": "state/last_rebalance.json already holds the newest restore point's",
        "backup": "state/last_rebalance.json: last_rebalance_"}
    for command, text in expected.items():
        proc = cli(elsewhere, command, given, *(["--dry-run"] if command == "restore" else []),
                   config=bot / "config.yaml")
        assert proc.returncode == 0, (command, proc.stderr)
        assert text in proc.stdout, (command, proc.stdout)
    assert len(backups_of(bot, "last_rebalance")) == 2, "the backup was of the bot's file"


@pytest.mark.parametrize("command", [["list"], ["backup"], ["verify"], ["restore", "--yes"]])
def test_a_path_that_is_no_configured_state_file_is_refused(bot, elsewhere, untouched,
                                                             command):
    before = files(bot)
    proc = cli(elsewhere, command[0], "other/last_rebalance.json", *command[1:],
               config=bot / "config.yaml")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "other/last_rebalance.json is not one of the state files" in proc.stderr
    assert "state/last_rebalance.json, state/paper_account.json, " \
           "state/autopilot_status.json" in proc.stderr
    assert "--path-as-given" in proc.stderr and "Traceback" not in proc.stderr
    assert files(bot) == before and list(elsewhere.iterdir()) == []


def test_path_as_given_uses_the_path_in_the_working_directory(bot, elsewhere):
    done = cli(elsewhere, "restore", "state/last_rebalance.json", "--path-as-given", "--yes",
               config=bot / "config.yaml")
    assert done.returncode == 0, done.stderr
    assert (elsewhere / "state" / "last_rebalance.json").read_bytes() == \
        (bot / "state" / "last_rebalance.json").read_bytes(), "what the user asked for"


def test_a_config_without_state_files_takes_paths_from_its_folder(tmp_path, elsewhere):
    home = tmp_path / "bot"
    (home / "state").mkdir(parents=True)
    (home / "config.yaml").write_text("backup:\n  keep_last: 5\n")
    (home / "state" / "last_rebalance.json").write_bytes(rebalance_doc())
    guard = Untouched(tmp_path, home / "backups")
    made = cli(elsewhere, "backup", "state/last_rebalance.json", config=home / "config.yaml")
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("state/last_rebalance.json: last_rebalance_")
    listing = cli(elsewhere, "list", config=home / "config.yaml")
    assert listing.stdout.splitlines()[0] == "last_rebalance.json: 1 backup(s) in backups"
    guard.check()


# --- 3. copies owed to a target that is no longer configured -----------------------------


def test_copies_owed_to_a_removed_mirror_are_a_problem_until_forgotten(bot, elsewhere, drive,
                                                                        untouched):
    config = bot / "config.yaml"
    set_backup(bot, mirror_dirs=[str(drive / "mirror")], keep_last=2, keep_daily=1)
    for i in range(3):  # the drive is not mounted: each copy waits
        (bot / "state" / "last_rebalance.json").write_bytes(rebalance_doc(n=i))
        assert cli(elsewhere, "backup", live_arg(bot), config=config).returncode == 0
    owed = backups_of(bot, "last_rebalance")[-3:]
    plan = prune_plan(cli(elsewhere, "prune", "--dry-run", config=config))
    assert plan[owed[0].name] == ("keep", "waiting for upload"), "the 3rd newest: keep_last 2"

    set_backup(bot, mirror_dirs=[])  # the mirror is given up
    status = cli(elsewhere, "status", config=config)
    assert status.returncode == 1
    lines = status.stdout.splitlines()
    (line,) = [ln for ln in lines if ln.startswith("PROBLEM") and "no longer configured" in ln]
    target = line.split(" owed to ")[1].split(",")[0]
    assert target.startswith("mirror-")
    # Three backups and their three restore points.
    assert line == f"PROBLEM: 6 copy(ies) owed to {target}, which is no longer configured " \
                   "(cloud turned off, or a mirror removed)"
    fix = lines[lines.index(line) + 1]
    assert fix.startswith("  fix: ") and fix.endswith(f"sync --forget {target}")

    sync = cli(elsewhere, "sync", config=config)
    assert sync.returncode == 1
    assert f"6 of them owed to {target}, which is no longer configured" in sync.stdout
    pruned = cli(elsewhere, "prune", "--dry-run", config=config)
    assert "waiting for upload" not in pruned.stdout, "nothing waits for a target that is gone"
    assert prune_plan(pruned)[owed[0].name][0] == "would remove"

    forget = run_printed(fix.split("drop them on purpose: ")[1], elsewhere)
    assert forget.returncode == 0, forget.stderr
    assert forget.stdout.startswith(f"forgot 6 copy(ies) owed to {target} (no longer "
                                    "configured): ")
    forgotten = forget.stdout.strip().split(": ", 1)[1].split(", ")
    assert sorted(forgotten) == sorted([p.name for p in owed] +
                                       [f"point-{n:010d}.json" for n in (3, 4, 5)])
    after = cli(elsewhere, "status", config=config)
    assert after.returncode == 0 and after.stdout.endswith("status: OK\n"), after.stdout
    assert cli(elsewhere, "sync", config=config).returncode == 0


def prune_plan(proc):
    """{backup name: (action, reason)} from `prune --dry-run`'s table."""
    plan = {}
    for line in proc.stdout.splitlines()[1:-1]:
        action = "would remove" if line.startswith("would remove") else line.split()[0]
        name, reason = line[len(action):].split(None, 1)
        plan[name] = (action, reason)
    return plan


def test_copies_owed_to_the_cloud_after_it_is_turned_off(bot, elsewhere, untouched):
    config = bot / "config.yaml"
    set_backup(bot, cloud_enabled=True, s3_bucket="b", s3_region="us-east-1",
               s3_endpoint_url=f"http://127.0.0.1:{refused_port()}")
    assert cli(elsewhere, "backup", live_arg(bot), config=config).returncode == 0
    set_backup(bot, cloud_enabled=False)
    status = cli(elsewhere, "--json", "status", config=config)
    assert status.returncode == 1
    doc = json.loads(status.stdout)
    assert doc["unconfigured_targets"][0]["target"] == "s3"
    (problem,) = [p for p in doc["problems"] if "no longer configured" in p["problem"]]
    assert problem["fix"].endswith("sync --forget s3")
    unknown = cli(elsewhere, "sync", "--forget", "nowhere", config=config)
    assert unknown.returncode == 2 and "copies are owed to: s3" in unknown.stderr
    assert cli(elsewhere, "sync", "--forget", "s3", config=config).returncode == 0
    assert cli(elsewhere, "status", config=config).returncode == 0


def test_a_conflict_is_dropped_by_the_target_status_shows(bot, elsewhere, drive, untouched):
    config = bot / "config.yaml"
    mirror = drive / "mirror"
    set_backup(bot, mirror_dirs=[str(mirror)])
    assert cli(elsewhere, "backup", live_arg(bot), config=config).returncode == 0
    mirror.mkdir(parents=True)
    newest = backups_of(bot, "last_rebalance")[-1].name
    (mirror / newest).write_bytes(b'{"other": "machine"}')
    assert cli(elsewhere, "sync", config=config).returncode == 1
    status = cli(elsewhere, "--json", "status", config=config)
    (problem,) = json.loads(status.stdout)["problems"]
    assert problem["problem"] == f"1 conflicting copy(ies) to {mirror}: it holds other " \
                                 "bytes under the same name, never overwritten"
    forget = run_printed(problem["fix"].split("drop them on purpose: ")[1], elsewhere)
    assert forget.returncode == 0, forget.stderr
    assert forget.stdout == f"forgot 1 conflicting copy(ies) owed to {mirror}: {newest}\n"
    assert cli(elsewhere, "status", config=config).returncode == 0
    assert (mirror / newest).read_bytes() == b'{"other": "machine"}', "never overwritten"


# --- 4. a lock held by another process ---------------------------------------------------


def hold_lock(path):
    """Another process holding `path` locked until its stdin is closed."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom backup_manager import file_lock\n"
         f"with file_lock({str(path)!r}, 10):\n    print('held', flush=True)\n"
         "    sys.stdin.read()"], env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True)
    assert holder.stdout.readline() == "held\n"
    return holder


def holder_named(holder):
    """How a lock error names `holder`: by PID and command where the system's lock table
    says who holds a lock (Linux's /proc/locks), else not at all."""
    if not os.path.exists("/proc/locks"):
        return ""
    return f" (PID {holder.pid}: {sys.executable} -c import sys from backup_manager import"


def release(holder):
    holder.stdin.close()
    assert holder.wait(timeout=30) == 0


def test_a_held_backups_lock_names_its_holder_the_wait_and_what_to_do(bot, elsewhere,
                                                                       untouched):
    set_backup(bot, lock_timeout_seconds=0.2)
    holder = hold_lock(bot / "backups" / ".lock")
    try:
        proc = cli(elsewhere, "backup", live_arg(bot), config=bot / "config.yaml")
    finally:
        release(holder)
    assert proc.returncode == 1
    assert proc.stdout.startswith(
        f"state/last_rebalance.json: FAILED: backups folder lock {bot}/backups/.lock is held "
        f"by another process{holder_named(holder)}")
    assert proc.stdout.endswith(
        "; waited 0.2 s. It is released when that process ends: run this again once it has "
        "finished (backup.lock_timeout_seconds sets how long to wait)\n")
    assert "Errno" not in proc.stdout + proc.stderr


# --- 5. sync progress that cron logs can read ---------------------------------------------


def owe_copies(bot, elsewhere, drive, count):
    """`count` backups owed to a mirror whose drive is not mounted yet."""
    set_backup(bot, mirror_dirs=[str(drive / "mirror")], keep_last=50)
    for i in range(count):
        (bot / "state" / "last_rebalance.json").write_bytes(rebalance_doc(n=i))
        assert cli(elsewhere, "backup", live_arg(bot),
                   config=bot / "config.yaml").returncode == 0


def progress_and_counts(proc):
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("sync:")]
    copied, pending = (int(w.strip(",")) for w in proc.stdout.split()[1:4:2])
    return lines, copied, pending


def test_sync_progress_without_a_terminal_is_whole_lines_that_agree_with_the_counts(
        bot, elsewhere, drive, untouched):
    owe_copies(bot, elsewhere, drive, 12)
    failed = cli(elsewhere, "sync", config=bot / "config.yaml")
    assert failed.returncode == 1 and "\r" not in failed.stderr
    lines, copied, pending = progress_and_counts(failed)
    assert (copied, pending) == (0, 24), "12 backups and their 12 restore points"
    assert lines == ["sync: 10/24 copies tried", "sync: 20/24 copies tried",
                     "sync: 24/24 copies tried"]
    drive.mkdir()  # mounted: now every complete backup the mirror lacks is sent
    done = cli(elsewhere, "sync", config=bot / "config.yaml")
    assert done.returncode == 0, done.stderr
    lines, copied, pending = progress_and_counts(done)
    total = len(list((bot / "backups").glob("*.json")))
    assert (copied, pending) == (total, 0)
    assert lines == [f"sync: {n}/{total} copies tried" for n in range(10, total, 10)] + [
        f"sync: {total}/{total} copies tried"]
    assert len(list((drive / "mirror").glob("*.json"))) == total


def test_sync_progress_on_a_terminal_is_one_line_rewritten(bot, elsewhere, drive, untouched):
    owe_copies(bot, elsewhere, drive, 5)
    drive.mkdir()
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "backup_manager", "--config",
                             str(bot / "config.yaml"), "sync"], cwd=elsewhere, env=ENV,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    shown = read_all(master)
    assert proc.wait(timeout=60) == 0
    total = len(list((bot / "backups").glob("*.json")))
    assert proc.stdout.read() == f"copied {total}, pending 0\n".encode()
    assert shown == "".join(f"\rsync: {i}/{total} copies tried"
                            for i in range(1, total + 1)) + "\n"


def read_all(master):
    data = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        data += chunk
    os.close(master)
    return data.decode().replace("\r\n", "\n")


# --- 6. status shows each problem with the command that fixes it ----------------------------


def test_status_shows_each_problem_with_a_fix_that_works(bot, elsewhere, untouched):
    config = bot / "config.yaml"
    (bot / "state" / "last_rebalance.json").write_bytes(rebalance_doc(n="edited by hand"))
    text = cli(elsewhere, "status", config=config)
    assert text.returncode == 1
    lines = text.stdout.splitlines()
    at = lines.index("PROBLEM: state/last_rebalance.json holds bytes no backup holds")
    assert lines[at + 1].startswith("  fix: ") and lines[-1] == "status: PROBLEM (1)"
    fix = lines[at + 1].removeprefix("  fix: ")
    assert fix == f"{sys.executable} -m backup_manager --config {config} backup " \
                  "state/last_rebalance.json"
    doc = json.loads(cli(elsewhere, "--json", "status", config=config).stdout)
    assert doc["ok"] is False and doc["problems"] == [
        {"subject": "last_rebalance.json", "kind": "unsaved-live-bytes",
         "problem": "state/last_rebalance.json holds bytes no backup holds", "fix": fix}]
    assert run_printed(fix, elsewhere).returncode == 0
    assert cli(elsewhere, "status", config=config).stdout.endswith("status: OK\n")


def test_a_recorded_backup_error_names_the_run_that_clears_it(bot, elsewhere, untouched):
    status_file = bot / "state" / "autopilot_status.json"
    doc = json.loads(status_file.read_text())
    doc["last_backup_error"] = "2026-11-01T00:00:00+00:00 last_rebalance.json: disk full"
    status_file.write_text(json.dumps(doc))
    shown = json.loads(cli(elsewhere, "--json", "status", config=bot / "config.yaml").stdout)
    (problem,) = [p for p in shown["problems"] if "disk full" in p["problem"]]
    assert problem["problem"] == "a backup failed and was not caught up yet: " \
                                 "2026-11-01T00:00:00+00:00 last_rebalance.json: disk full"
    command = problem["fix"].split("run the daily check: ")[1].split(" (")[0]
    assert command == f"{sys.executable} {bot / 'dalio_lite.py'} --config {bot / 'config.yaml'}"
    assert run_printed(command, elsewhere).returncode == 0
    assert cli(elsewhere, "status", config=bot / "config.yaml").returncode == 0


def test_dalio_status_shows_problems_with_their_fix(bot, untouched):
    (bot / "state" / "paper_account.json").write_text('{"cash": 1.0, "positions": {}}')
    doc = json.loads(dalio(bot, "--status").stdout)
    (problem,) = doc["problems"]
    assert problem == {
        "subject": "paper_account.json", "kind": "unsaved-live-bytes",
        "problem": f"{bot / 'state' / 'paper_account.json'} holds bytes no backup holds",
        "fix": f"{sys.executable} -m backup_manager --config {bot / 'config.yaml'} "
               f"backup {bot / 'state' / 'paper_account.json'}"}


# --- 7. a reader that closes the pipe early -----------------------------------------------


@pytest.mark.parametrize("command", [["dalio", "--status"], ["cli", "status"],
                                     ["cli", "list"], ["cli", "--json", "status"]])
def test_a_closed_pipe_ends_quietly(bot, elsewhere, untouched, command):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written: `| head -0`
    try:
        if command[0] == "dalio":
            proc = dalio(bot, *command[1:], stdout=write_end, stderr=subprocess.PIPE)
        else:
            proc = cli(elsewhere, *command[1:], config=bot / "config.yaml", stdout=write_end,
                       stderr=subprocess.PIPE)
    finally:
        os.close(write_end)
    assert (proc.returncode, proc.stderr) == (141, "")


# --- 8. --json: every outcome is one JSON document ----------------------------------------


@pytest.mark.parametrize("args,message", [
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["status", "--max-age-hours", "-1"], "--max-age-hours must be a number > 0"),
    (["restore", "nowhere/x.json", "--yes"], "nowhere/x.json is not one of the state files"),
    (["status", "--json"], "unrecognized arguments: --json"),
])
def test_json_usage_errors_are_one_json_document(bot, elsewhere, untouched, args, message):
    proc = cli(elsewhere, "--json", *args, config=bot / "config.yaml")
    assert proc.returncode == 2
    doc = json.loads(proc.stdout)
    assert doc["exit_code"] == 2 and message in doc["error"]
    assert f"error: {doc['error']}\n" in proc.stderr


@pytest.mark.parametrize("config_text,message", [
    ("backup:\n  keep_lats: 3\n", "unknown key(s) keep_lats"),
    ("backup: [", "is not valid YAML"),
])
def test_json_config_errors_are_one_json_document(tmp_path, elsewhere, config_text, message):
    (tmp_path / "broken.yaml").write_text(config_text)
    guard = Untouched(tmp_path)
    proc = cli(elsewhere, "--json", "status", config=tmp_path / "broken.yaml")
    assert proc.returncode == 2
    doc = json.loads(proc.stdout)
    assert message in doc["error"] and doc["exit_code"] == 2
    assert proc.stderr == f"error: {doc['error']}\n"
    guard.check()


def test_json_missing_config_and_refused_restore(bot, elsewhere, untouched):
    missing = cli(elsewhere, "--json", "status", config=elsewhere / "missing.yaml")
    assert missing.returncode == 2
    assert json.loads(missing.stdout) == {
        "error": f"config file {elsewhere / 'missing.yaml'} does not exist", "exit_code": 2}
    (bot / "state" / "last_rebalance.json").write_bytes(rebalance_doc(n="valid, newer"))
    refused = cli(elsewhere, "--json", "restore", live_arg(bot),
                  config=bot / "config.yaml")
    assert refused.returncode == 2
    doc = json.loads(refused.stdout)
    assert "refusing to replace it without confirmation: add --yes" in doc["error"]


# --- 9. interactive restore -----------------------------------------------------------------


def restore_on_a_terminal(bot, cwd, answer):
    """Run restore with a terminal as stdin and stdout; answer its question."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "backup_manager", "--config",
                             str(bot / "config.yaml"), "restore", live_arg(bot)],
                            cwd=cwd, env=ENV, stdin=slave, stdout=slave, stderr=subprocess.PIPE)
    os.close(slave)
    asked = b""
    while b"[y/N] " not in asked:  # input() asks on stderr
        chunk = os.read(proc.stderr.fileno(), 1024)
        assert chunk, "restore ended without asking"
        asked += chunk
    os.write(master, answer + b"\n")
    shown = read_all(master)
    stderr = asked + proc.stderr.read()
    return proc.wait(timeout=60), shown, stderr.decode()


def test_interactive_yes_shows_the_plan_once_and_restores(bot, elsewhere, untouched):
    live = bot / "state" / "last_rebalance.json"
    live.write_bytes(rebalance_doc(n="valid, newer"))
    code, shown, stderr = restore_on_a_terminal(bot, elsewhere, b"y")
    assert code == 0, stderr
    assert shown.count("backup:   last_rebalance_") == 1
    assert shown.count("replaces: a valid file") == 1
    assert "Replace state/last_rebalance.json? [y/N] " in stderr
    assert "restored state/last_rebalance.json from last_rebalance_" in shown
    assert b"newer" not in live.read_bytes()


def test_interactive_no_restores_nothing_and_exits_1(bot, elsewhere, untouched):
    live = bot / "state" / "last_rebalance.json"
    live.write_bytes(rebalance_doc(n="valid, newer"))
    before = files(bot)
    code, shown, stderr = restore_on_a_terminal(bot, elsewhere, b"n")
    assert code == 1
    assert shown.count("backup:   last_rebalance_") == 1 and "restored" not in shown
    assert stderr.endswith("not restored\n")
    assert b"valid, newer" in live.read_bytes() and files(bot) == before


# --- 10, 11. DalioLite checks its setup before any decision ----------------------------------


def test_state_that_is_a_file_says_what_to_do(tmp_path):
    home = tmp_path / "bot"
    home.mkdir()
    shutil.copy(ROOT / "config.yaml", home / "config.yaml")
    shutil.copy(ROOT / "dalio_lite.py", home / "dalio_lite.py")
    (home / "state").write_text("not a folder")
    guard = Untouched(tmp_path)
    proc = dalio(home)
    assert proc.returncode == 1
    assert f"state.dir {home / 'state'} is a file, not a folder" in proc.stderr
    assert f"mv {home / 'state'} {home / 'state'}.moved" in proc.stderr
    assert "Errno" not in proc.stderr and "Traceback" not in proc.stderr
    assert (home / "state").read_text() == "not a folder"
    guard.check()


def test_alpaca_without_alpaca_py_fails_at_start_up_on_a_no_trade_day(bot, untouched,
                                                                      tmp_path_factory):
    config = bot / "config.yaml"
    doc = yaml.safe_load(config.read_text())
    doc["broker"]["kind"] = "alpaca"
    config.write_text(yaml.safe_dump(doc))
    before = files(bot)
    # alpaca-py is installed for the tests: this process must not find it, as on a
    # machine where it never was (site imports sitecustomize from PYTHONPATH first).
    hider = tmp_path_factory.mktemp("without-alpaca")
    (hider / "sitecustomize.py").write_text("import sys\nsys.modules['alpaca'] = None\n")
    proc = subprocess.run([sys.executable, str(bot / "dalio_lite.py"), "--config", str(config)],
                          cwd=bot.parent, capture_output=True, text=True, timeout=60,
                          env={**ENV, "PYTHONPATH": f"{hider}{os.pathsep}{ROOT}"})
    assert proc.returncode == 1  # the first run rebalanced: nothing is due today
    assert f"{sys.executable} -m pip install 'alpaca-py>=0.30'" in proc.stderr
    assert "decision:" not in proc.stderr, "checked before any decision"
    assert files(bot) == before


# --- 12. paths relative to the config's folder, as the command line reference shows them ----


def test_output_names_paths_as_the_command_line_reference_shows_them(bot, elsewhere, untouched):
    config = bot / "config.yaml"
    assert cli(elsewhere, "backup", live_arg(bot), config=config).returncode == 0
    reference = (ROOT / "docs" / "command-line.md").read_text()
    listing = cli(elsewhere, "list", "state/last_rebalance.json", config=config).stdout
    assert listing.splitlines()[0] == "state/last_rebalance.json: 2 backup(s) in backups"
    assert "\nstate/last_rebalance.json: 2 backup(s) in backups\n" in reference
    status = cli(elsewhere, "status", config=config).stdout
    (disk,) = [ln for ln in status.splitlines() if ln.startswith("disk use: ")]
    assert disk.endswith(" bytes in backups") and "bytes in backups\n" in reference
    drill = cli(elsewhere, "drill", config=config).stdout.splitlines()
    assert [ln.split()[0] for ln in drill[1:4]] == [f"state/{n}" for n in STATE_FILES]
    for name in STATE_FILES:
        assert f"\nstate/{name}  " in reference
    for out in (listing, status, "\n".join(drill)):
        assert str(bot) not in out


# --- 13. a manual restore never lands in the middle of a daily check ------------------------


def test_restore_refuses_while_the_run_lock_is_held_and_says_how_to_retry(bot, elsewhere,
                                                                           untouched):
    set_backup(bot, host_lock_timeout_seconds=0.3)
    live = bot / "state" / "last_rebalance.json"
    live.write_bytes(rebalance_doc(n="valid, newer"))
    holder = hold_lock(bot / "state" / "dalio_lite.lock")
    try:
        refused = cli(elsewhere, "restore", live_arg(bot), "--yes",
                      config=bot / "config.yaml")
    finally:
        release(holder)
    assert refused.returncode == 1
    assert refused.stdout == ""
    waited, error = refused.stderr.splitlines()
    assert waited == ("waiting up to 0.3 s for DalioLite's run lock (backup.host_lock) "
                      "state/dalio_lite.lock: a DalioLite run is in progress, and a restore "
                      "waits for it to finish")
    assert error.startswith(f"error: DalioLite's run lock (backup.host_lock) "
                            f"{bot}/state/dalio_lite.lock is held by another process"
                            f"{holder_named(holder)}")
    assert "waited 0.3 s" in error and "Nothing was restored. To retry: " in error
    assert b"valid, newer" in live.read_bytes()
    retry = run_printed(error.split("To retry: ")[1], elsewhere)
    assert retry.returncode == 0, retry.stderr
    assert b"newer" not in live.read_bytes()


def restore_behind_a_running_check(bot, elsewhere):
    """A valid live file no backup holds, DalioLite's run lock held by another process,
    and `restore --yes` started behind it: (live path, lock holder, restore process)."""
    live = bot / "state" / "last_rebalance.json"
    live.write_bytes(rebalance_doc(n="valid, newer"))
    holder = hold_lock(bot / "state" / "dalio_lite.lock")
    restore = subprocess.Popen(
        [sys.executable, "-m", "backup_manager", "--config", str(bot / "config.yaml"),
         "restore", live_arg(bot), "--yes"], cwd=elsewhere, env=ENV,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return live, holder, restore



def test_restore_waits_for_a_running_daily_check(bot, elsewhere, untouched):
    live, holder, restore = restore_behind_a_running_check(bot, elsewhere)
    try:
        assert restore.stderr.readline().startswith("waiting up to 60 s for DalioLite's run lock")
        assert b"valid, newer" in live.read_bytes(), "nothing restored while the run goes on"
    finally:
        release(holder)
    assert restore.wait(timeout=60) == 0
    assert "restored state/last_rebalance.json" in restore.stdout.read()
    assert b"newer" not in live.read_bytes()


def test_the_run_lock_has_one_source_the_state_folder():
    """The shipped config names no lock: DalioLite's run lock is state.dir's
    dalio_lite.lock for the bot, the command line and the page alike."""
    from backup_manager import Site

    backup = yaml.safe_load((ROOT / "config.yaml").read_text())["backup"]
    assert "host_lock" not in backup and backup["host_lock_timeout_seconds"] > 0
    site = Site(ROOT / "config.yaml")
    assert site.run_lock == ROOT / "state" / "dalio_lite.lock"



def test_restore_never_lands_over_what_the_daily_check_wrote_meanwhile(bot, elsewhere,
                                                                      untouched):
    live, holder, restore = restore_behind_a_running_check(bot, elsewhere)
    try:
        assert restore.stderr.readline().startswith("waiting up to 60 s for DalioLite's run lock")
        live.write_bytes(rebalance_doc(n="what the running check saved"))
    finally:
        release(holder)
    assert restore.wait(timeout=60) == 1
    error = restore.stderr.read()
    assert error.startswith("error: state/last_rebalance.json changed since the backup to "
                            "restore was chosen (a DalioLite run wrote it); nothing was "
                            "restored. Look again: ")
    assert error.rstrip().endswith("restore state/last_rebalance.json --dry-run")
    assert b"what the running check saved" in live.read_bytes()


def test_a_moved_state_folder_moves_the_run_lock_for_the_bot_and_the_command_line(
        tmp_path, elsewhere):
    """state.dir moved to var/state (and backup.state_files with it): the bot, the
    command line's restore and the page (tests/test_dashboard.py) take one run lock,
    var/state/dalio_lite.lock. Held, the bot waits for it and the restore waits and
    refuses, changing nothing."""
    home = tmp_path / "moved"
    home.mkdir()
    shutil.copy(ROOT / "dalio_lite.py", home / "dalio_lite.py")
    doc = yaml.safe_load((ROOT / "config.yaml").read_text())
    doc["state"]["dir"] = "var/state"
    doc["concurrency"]["lock_timeout_seconds"] = 0.5
    doc["backup"].update(host_lock_timeout_seconds=0.5, state_files=[
        f"var/state/{name}" for name in STATE_FILES])
    (home / "config.yaml").write_text(yaml.safe_dump(doc))
    assert dalio(home).returncode == 0
    live = home / "var" / "state" / "last_rebalance.json"
    live.write_bytes(rebalance_doc(n="valid, newer"))
    holder = hold_lock(home / "var" / "state" / "dalio_lite.lock")
    try:
        waited = dalio(home)
        refused = cli(elsewhere, "restore", str(live), "--yes", config=home / "config.yaml")
    finally:
        release(holder)
    assert waited.returncode != 0 and "dalio_lite.lock is held by another process" in \
        waited.stderr, waited.stderr
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr.startswith("waiting up to 0.5 s for DalioLite's run lock "
                                     "(backup.host_lock) var/state/dalio_lite.lock")
    assert "Nothing was restored" in refused.stderr
    assert b"valid, newer" in live.read_bytes()
