"""Start-up of the DalioLite host, from the outside: real `python dalio_lite.py` and
`python -m backup_manager` processes against real folders. What a user sees: exit
codes, orders in the log, file bytes, messages (promises 8, 10, 11)."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from backup_manager import BackupManager
from tests.helpers import ROOT, refusal_of
from tests.reliability.procs import needs_faketime

STATE_FILES = ("last_rebalance.json", "paper_account.json", "autopilot_status.json")
TIMEOUT = 30  # a normal run takes well under a second: more is a hang


def _env(extra=None, faketime=False):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(extra or {})}
    if faketime:
        # Shift the wall clock only (CLOCK_MONOTONIC back could go below zero).
        env["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"
    return env


def run(home, *args, faketime=None, env=None, timeout=TIMEOUT):
    """`python dalio_lite.py --config HOME/config.yaml ARGS`, from another folder."""
    command = [sys.executable, str(ROOT / "dalio_lite.py"), "--config",
               str(home / "config.yaml"), *args]
    if faketime is not None:
        command = ["faketime", *faketime, *command]
    try:
        return subprocess.run(command, cwd=home.parent, capture_output=True, text=True,
                              env=_env(env, faketime is not None), stdin=subprocess.DEVNULL,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"dalio_lite.py {' '.join(args)} hung: still running after {timeout} s")


def backup_cli(home, *args):
    """`python -m backup_manager --config HOME/config.yaml ARGS`."""
    return subprocess.run([sys.executable, "-m", "backup_manager", "--config",
                           str(home / "config.yaml"), *args], cwd=home.parent,
                          capture_output=True, text=True, env=_env(),
                          stdin=subprocess.DEVNULL, timeout=TIMEOUT)


def orders_in(proc):
    return [line for line in proc.stderr.splitlines() if "order:" in line]


def state(home, name, folder="state"):
    return home / folder / name


def state_bytes(home, folder="state"):
    return {n: state(home, n, folder).read_bytes() for n in STATE_FILES
            if state(home, n, folder).exists()}


def status_doc(home):
    return json.loads(state(home, "autopilot_status.json").read_text())


def complete_backups(home, name, folder="state"):
    """Bytes of each complete backup of a state file, newest first."""
    bm = BackupManager(home / "backups")
    return [b.path.read_bytes() for b in bm.list_backups(state(home, name, folder))
            if b.complete]


def assert_every_file_backed_up(home, folder="state"):
    """Promise 10: after a run, each live state file equals its newest backup."""
    bm = BackupManager(home / "backups")
    for name in STATE_FILES:
        path = state(home, name, folder)
        newest = bm.list_backups(path)
        assert newest and newest[0].complete, f"{name} has no complete backup"
        assert newest[0].path.read_bytes() == path.read_bytes(), \
            f"{name}: the live bytes are not its newest backup {newest[0].name}"


def edit_config(home, change):
    doc = yaml.safe_load((home / "config.yaml").read_text())
    change(doc)
    (home / "config.yaml").write_text(yaml.safe_dump(doc))


def move_prices(home):
    """VTI up 60%: the portfolio drifts past the threshold, so a first run would trade."""
    edit_config(home, lambda doc: doc["broker"]["prices"].update(VTI=400.0))


def drop_backups(home, stem):
    for p in (home / "backups").glob(f"{stem}_*"):
        p.unlink()


def run_lock_is_free(home):
    fd = os.open(state(home, "dalio_lite.lock"), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def first_run(home):
    done = run(home)
    assert done.returncode == 0, done.stderr
    assert len(orders_in(done)) == 4
    return done


# --- 1. backups/ lost ---------------------------------------------------------------------


def test_lost_backups_folder_is_rebuilt_by_one_run_then_a_lost_file_comes_back(home):
    first_run(home)
    assert run(home).returncode == 0
    shutil.rmtree(home / "backups")
    one = run(home)
    assert one.returncode == 0, one.stderr
    assert orders_in(one) == []
    checked = backup_cli(home, "verify")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert_every_file_backed_up(home)

    original = state(home, "last_rebalance.json").read_bytes()
    state(home, "last_rebalance.json").unlink()
    move_prices(home)  # a first run would trade now
    again = run(home)
    assert again.returncode == 0, again.stderr
    assert orders_in(again) == [], "traded inside min_days_between after a restore"
    assert state(home, "last_rebalance.json").read_bytes() == original
    assert "first run" not in again.stderr
    assert status_doc(home)["outcome"] == "no_action"


# --- 2. backups/ unusable for a while -----------------------------------------------------


def test_backups_outage_is_recorded_then_caught_up(home):
    first_run(home)
    (home / "backups").rename(home / "backups.away")
    (home / "backups").write_text("a file where the backups folder belongs")

    quiet = run(home)
    assert quiet.returncode == 0, quiet.stderr
    assert orders_in(quiet) == []
    assert status_doc(home)["last_backup_error"], \
        "the status file's own failed backup was not recorded"
    during = backup_cli(home, "status")
    assert during.returncode == 1, during.stdout + during.stderr
    assert str(home / "backups") in during.stdout + during.stderr

    move_prices(home)
    held = run(home, "--force-rebalance")
    assert held.returncode == 3, "no order without its intent committed first"
    assert orders_in(held) == []
    account = json.loads(state(home, "paper_account.json").read_text())
    account["cash"] += 1.0  # changed during the outage (by hand)
    state(home, "paper_account.json").write_text(json.dumps(account))
    changed_during_outage = state(home, "paper_account.json").read_bytes()

    (home / "backups").unlink()
    (home / "backups.away").rename(home / "backups")
    after = run(home)
    assert after.returncode == 0, after.stderr
    assert orders_in(after) == []
    assert changed_during_outage in complete_backups(home, "paper_account.json")
    assert_every_file_backed_up(home)
    assert status_doc(home)["last_backup_error"] is None
    ok = backup_cli(home, "status")
    assert ok.returncode == 0, ok.stdout + ok.stderr

    state(home, "paper_account.json").unlink()
    restored = run(home)
    assert restored.returncode == 0, restored.stderr
    assert state(home, "paper_account.json").read_bytes() == changed_during_outage, \
        "the positions from before the outage came back"


# --- 3. configuration keys left out -------------------------------------------------------


def _no_state_files(doc):
    del doc["backup"]["state_files"]


def _no_backup_section(doc):
    del doc["backup"]


def _state_dir_data(doc):
    del doc["backup"]["state_files"]
    doc["state"] = {"dir": "data"}


@pytest.mark.parametrize("change,folder", [
    (_no_state_files, "state"),
    (_no_backup_section, "state"),
    (_state_dir_data, "data"),
], ids=["no backup.state_files", "no backup section", "state.dir data"])
def test_default_state_files_are_recovered(home, change, folder):
    edit_config(home, change)
    first_run(home)
    assert_every_file_backed_up(home, folder)
    before = state_bytes(home, folder)
    assert set(before) == set(STATE_FILES)
    for name in STATE_FILES:
        state(home, name, folder).unlink()
    move_prices(home)
    again = run(home)
    assert again.returncode == 0, again.stderr
    assert orders_in(again) == []
    for name in ("last_rebalance.json", "paper_account.json"):
        assert state(home, name, folder).read_bytes() == before[name], name
    for name in STATE_FILES:
        assert f"recovered {state(home, name, folder)}" in again.stderr, name
    if folder != "state":
        assert not (home / "state").exists(), "state/ was created though state.dir is data"


def test_state_file_outside_state_dir_is_a_config_error_naming_both_keys(home):
    edit_config(home, lambda doc: doc["backup"].update(
        state_files=["state/last_rebalance.json", "elsewhere/paper_account.json"]))
    done = run(home)
    assert done.returncode == 1, done.stderr
    assert "backup.state_files" in done.stderr and "state.dir" in done.stderr
    assert "Traceback" not in done.stderr
    assert orders_in(done) == []


def test_state_files_list_leaving_out_last_rebalance_still_protects_it(home):
    """DalioLite backs up every state file it writes; a lost last_rebalance.json with
    valid backups must come back even when backup.state_files leaves it out (or the
    config is refused as it stands)."""
    edit_config(home, lambda doc: doc["backup"].update(
        state_files=["state/paper_account.json", "state/autopilot_status.json"]))
    first = run(home)
    if first.returncode == 1 and "backup.state_files" in first.stderr:
        return  # refusing such a config protects the user too
    assert first.returncode == 0, first.stderr
    assert complete_backups(home, "last_rebalance.json"), "precondition: it was backed up"
    original = state(home, "last_rebalance.json").read_bytes()
    state(home, "last_rebalance.json").unlink()
    move_prices(home)
    again = run(home)
    assert orders_in(again) == [], (
        "last_rebalance.json had valid backups, yet it was not restored and DalioLite "
        "traded inside min_days_between:\n" + "\n".join(orders_in(again)))
    assert state(home, "last_rebalance.json").read_bytes() == original


# --- 4. the clock -------------------------------------------------------------------------


def test_clock_two_hours_behind_refuses_and_changes_no_state(home):
    needs_faketime()
    first_run(home)
    before = state_bytes(home)
    move_prices(home)
    late = run(home, faketime=["-f", "-2h"])
    assert late.returncode == 3, late.stderr
    assert "refusing to trade" in late.stderr
    assert orders_in(late) == []
    assert state_bytes(home) == before, "a state file changed under a clock behind"
    assert not list((home / "backups").glob("corrupt/last_rebalance_*")), \
        "a valid last_rebalance.json ahead of the clock was treated as corrupt"
    assert "recovered" not in late.stderr, "an older backup was restored"


def test_clock_behind_with_the_file_lost_restores_it_and_refuses(home):
    needs_faketime()
    first_run(home)
    original = state(home, "last_rebalance.json").read_bytes()
    state(home, "last_rebalance.json").unlink()
    move_prices(home)
    late = run(home, faketime=["-f", "-2h"])
    assert late.returncode == 3, late.stderr
    assert orders_in(late) == []
    # A refusing run installs nothing (promise 11): the next run, on a right clock,
    # faces the same loss and restores it.
    assert not state(home, "last_rebalance.json").exists()
    right = run(home)
    assert right.returncode == 0, right.stderr
    assert orders_in(right) == []
    assert state(home, "last_rebalance.json").read_bytes() == original


def test_clock_that_ran_ahead_and_came_back_refuses_without_rolling_back(home):
    needs_faketime()
    first_run(home)
    move_prices(home)
    ahead = run(home, faketime=["-f", "+31d"])
    assert ahead.returncode == 0, ahead.stderr
    assert orders_in(ahead), "precondition: the run a month ahead rebalanced"
    before = state_bytes(home)
    back = run(home, "--force-rebalance")
    assert back.returncode == 3, back.stderr
    assert orders_in(back) == []
    assert "ahead of the clock" in back.stderr
    assert state_bytes(home) == before, "state was rolled back or changed"


@pytest.mark.parametrize("form", ["aware", "naive local"])
@pytest.mark.parametrize("args", [(), ("--force-rebalance",)], ids=["normal", "forced"])
def test_last_rebalance_ahead_of_the_clock_refuses_naming_both_causes(home, form, args):
    first_run(home)
    ahead = datetime.now(UTC) + timedelta(minutes=10)
    tz = {"TZ": "EST+5"}  # local time is UTC-5 for the runs below
    when = ahead.isoformat() if form == "aware" else \
        (ahead - timedelta(hours=5)).replace(tzinfo=None).isoformat()
    state(home, "last_rebalance.json").write_text(json.dumps({"timestamp": when}))
    move_prices(home)
    before = state_bytes(home)
    done = run(home, *args, env=tz)
    assert done.returncode == 3, done.stderr
    assert orders_in(done) == []
    assert "refusing to trade" in done.stderr
    assert "clock" in done.stderr
    assert str(state(home, "last_rebalance.json")) in done.stderr, "the file is not named"
    assert state_bytes(home) == before


# --- 5. a FIFO where a file belongs -------------------------------------------------------


@pytest.mark.parametrize("name", STATE_FILES)
def test_fifo_at_a_state_path_is_restored_from_backup(home, name):
    first_run(home)
    original = state(home, name).read_bytes()
    state(home, name).unlink()
    os.mkfifo(state(home, name))
    done = run(home)
    assert done.returncode == 0, done.stderr
    assert orders_in(done) == []
    assert state(home, name).is_file()
    if name != "autopilot_status.json":  # the run itself rewrites the status file
        assert state(home, name).read_bytes() == original
    assert run_lock_is_free(home)


@pytest.mark.parametrize("name", STATE_FILES)
def test_fifo_at_a_state_path_without_backups_refuses(home, name):
    (home / "state").mkdir()
    os.mkfifo(state(home, name))
    done = run(home)
    assert done.returncode == 3, done.stderr
    assert "refusing to trade" in done.stderr
    assert orders_in(done) == []
    assert run_lock_is_free(home)


def _stamp_after_newest(home, name):
    newest = BackupManager(home / "backups").list_backups(state(home, name))[0]
    return f"{newest.timestamp + timedelta(seconds=1):%Y-%m-%d_%H-%M-%S.%f}Z"


@pytest.mark.parametrize("planted", ["sidecar", "backup"])
def test_fifo_in_the_backups_folder_never_hangs_the_run(home, planted):
    """A FIFO at the newest backup's (or sidecar's) name: the run must not block in
    open() forever while holding the run lock."""
    first_run(home)
    original = state(home, "last_rebalance.json").read_bytes()
    name = f"last_rebalance_{_stamp_after_newest(home, 'last_rebalance.json')}.json"
    if planted == "sidecar":
        (home / "backups" / name).write_bytes(original)
        os.mkfifo(home / "backups" / (name + ".sha256"))
    else:
        os.mkfifo(home / "backups" / name)
        (home / "backups" / (name + ".sha256")).write_text(f"{'0' * 64}  {name}\n")
        state(home, "last_rebalance.json").unlink()  # the run must restore it
    done = run(home, timeout=10)
    assert done.returncode == 0, done.stderr
    assert orders_in(done) == []
    assert state(home, "last_rebalance.json").read_bytes() == original


# --- 6. an unexpected exception from a backup in the middle of the orders -----------------


def test_unexpected_backup_exception_mid_orders_is_recorded_and_every_order_placed(
        home, caplog):
    from dalio_lite import DalioLite, PaperBroker

    class CountingBroker(PaperBroker):
        def __init__(self, *a):
            super().__init__(*a)
            self.orders = []

        def submit_order(self, order_data):
            self.orders.append(order_data)
            return super().submit_order(order_data)

    holder = {}
    prices = {"VTI": 250.0, "TLT": 90.0, "GLD": 190.0, "DBC": 22.0}
    broker = CountingBroker(prices, PaperBroker.new_account(100000),
                            lambda doc: holder["bot"].save_state("paper_account.json", doc))
    bot = DalioLite(home / "config.yaml", broker=broker)
    holder["bot"] = bot
    real = bot.backup_manager.backup_state_file

    def backup(path):
        if broker.orders:  # from the first fill on
            raise OverflowError("simulated overflow in the backup")
        return real(path)

    bot.backup_manager.backup_state_file = backup
    with caplog.at_level(logging.ERROR):
        decision = bot.run_daily_check()
    assert decision.outcome == "rebalanced"
    assert len(broker.orders) == 4, "the order sequence stopped half-way"
    assert json.loads(state(home, "last_rebalance.json").read_text())["timestamp"]
    assert "simulated overflow" in (status_doc(home)["last_backup_error"] or "")
    logged = [r for r in caplog.records if r.exc_info and r.exc_info[0] is OverflowError]
    assert logged, "the traceback of the failed backup was not logged"

    after = run(home)  # the next start catches up what was missed
    assert after.returncode == 0, after.stderr
    assert orders_in(after) == []
    assert_every_file_backed_up(home)
    assert status_doc(home)["last_backup_error"] is None


# --- 7. the host's own records are evidence -----------------------------------------------


def _empty_account(home):
    state(home, "paper_account.json").write_text(
        json.dumps({"cash": 100000.0, "positions": {}}))


def _evidence_rebalanced(home):
    _empty_account(home)  # only the status file says a rebalance happened
    return "autopilot_status.json"


def _evidence_next_eligible(home):
    assert run(home).returncode == 0  # outcome no_action, next_eligible_rebalance set
    assert status_doc(home)["outcome"] == "no_action"
    _empty_account(home)
    return "autopilot_status.json"


def _evidence_positions(home):
    state(home, "autopilot_status.json").unlink()
    drop_backups(home, "autopilot_status")
    return "paper_account.json"


@pytest.mark.parametrize("make_evidence", [
    _evidence_rebalanced, _evidence_next_eligible, _evidence_positions,
], ids=["status rebalanced", "status next eligible", "account positions"])
def test_host_records_are_evidence_then_accept_fresh_starts_over(home, make_evidence):
    first_run(home)
    named = make_evidence(home)
    state(home, "last_rebalance.json").unlink()
    drop_backups(home, "last_rebalance")
    for point in (home / "backups").glob("point-*"):  # a folder from before restore points
        point.unlink()
    move_prices(home)
    refused = run(home)
    assert refused.returncode == 3, refused.stderr
    assert orders_in(refused) == []
    assert not state(home, "last_rebalance.json").exists()
    assert named in refused.stderr, f"the evidence ({named}) is not named"
    _, _, commands = refusal_of(refused.stderr)
    assert any(c.endswith(f"python -m backup_manager --config {home / 'config.yaml'} verify")
               for c in commands)
    assert any(c.endswith("--accept-fresh-state") for c in commands)
    assert not any(" restore " in c for c in commands), "no backup is left to restore"

    fresh = run(home, "--accept-fresh-state")
    assert fresh.returncode == 0, fresh.stderr
    normal = run(home)
    assert normal.returncode == 0, normal.stderr
    assert orders_in(normal) == []


def test_refusal_says_exactly_what_to_run_for_the_lost_file(home):
    """Promise 8: "says exactly what to run", commands that work in that situation, not
    placeholders: the lost file's newest point is damaged, an older point holds an
    older state; the restore printed installs it, and the run after it refuses until
    the rollback is acknowledged."""
    first_run(home)
    older_bytes = state(home, "last_rebalance.json").read_bytes()
    later = {"timestamp": datetime.now(UTC).isoformat()}
    state(home, "last_rebalance.json").write_text(json.dumps(later))  # a newer rebalance
    assert run(home).returncode == 0  # caught up into a restore point of its own
    newest = BackupManager(home / "backups").list_backups(state(home, "last_rebalance.json"))[0]
    newest.path.write_bytes(newest.path.read_bytes()[:-3])  # bit rot
    state(home, "last_rebalance.json").unlink()
    refused = run(home)
    assert refused.returncode == 3, refused.stderr
    headline, reasons, commands = refusal_of(refused.stderr)
    assert "held by no store" in headline
    path = state(home, "last_rebalance.json")
    (restore,) = [c for c in commands if " restore " in c]
    assert restore.endswith(f"restore {path} --yes"), restore
    done = subprocess.run(restore, shell=True, cwd=home.parent, capture_output=True,
                          text=True, env=_env(), timeout=TIMEOUT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert path.read_bytes() == older_bytes
    assert "ROLLBACK" in done.stdout
    again = run(home)
    assert again.returncode == 3 and "older than the newest restore point" in again.stderr
    assert orders_in(again) == []


def test_a_refusal_does_not_erase_its_own_evidence(home):
    """The refused run rewrites autopilot_status.json (outcome refused, no next eligible
    rebalance): the only record of the rebalance must not be gone for the next run."""
    first_run(home)
    _evidence_rebalanced(home)
    state(home, "last_rebalance.json").unlink()
    drop_backups(home, "last_rebalance")
    move_prices(home)
    refused = run(home)
    assert refused.returncode == 3, refused.stderr
    again = run(home)
    assert orders_in(again) == [], (
        "the run after a refusal traded as a first run:\n" + "\n".join(orders_in(again)))
    assert again.returncode == 3, again.stderr


def test_lost_paper_account_with_a_rebalance_on_record_refuses(home):
    """last_rebalance.json and autopilot_status.json say the paper broker traded; its
    account is gone with its backups: not a fresh account with starting cash."""
    first_run(home)
    state(home, "paper_account.json").unlink()
    drop_backups(home, "paper_account")
    done = run(home)
    assert done.returncode == 3, (
        "the lost paper account was silently started over:\n" + done.stderr[-2000:])
    assert "paper_account.json" in done.stderr


def test_fallback_to_an_older_backup_the_records_contradict_does_not_trade(home):
    """The newest backup of the lost last_rebalance.json is damaged, an older one (a
    rebalance 40 days ago) is valid; autopilot_status.json says the last rebalance was
    today. Restoring the older one rolls the history back: no trade on it."""
    (home / "state").mkdir()
    old = datetime.now(UTC) - timedelta(days=40)
    state(home, "last_rebalance.json").write_text(json.dumps({"timestamp": old.isoformat()}))
    _empty_account(home)
    made = backup_cli(home, "backup", str(state(home, "last_rebalance.json")))
    assert made.returncode == 0, made.stdout + made.stderr
    today = run(home)  # due after 40 days: rebalances now
    assert today.returncode == 0 and orders_in(today), today.stderr
    assert status_doc(home)["outcome"] == "rebalanced"
    newest = BackupManager(home / "backups").list_backups(state(home, "last_rebalance.json"))[0]
    newest.path.write_bytes(newest.path.read_bytes()[:-3])  # bit rot
    state(home, "last_rebalance.json").unlink()
    move_prices(home)
    again = run(home)
    assert again.returncode in (0, 3), again.stderr
    assert orders_in(again) == [], (
        "restored a rebalance 40 days old while autopilot_status.json records one today, "
        "and traded inside min_days_between:\n" + "\n".join(orders_in(again)))


def test_a_refused_run_changes_nothing_and_the_next_good_run_catches_up(home):
    """Promise 11: a refusing run writes no backup, no point, no state; once the doubt is
    settled (here a deliberate fresh start), every valid file is held again."""
    first_run(home)
    drop_backups(home, "paper_account")  # e.g. deleted by hand
    state(home, "last_rebalance.json").unlink()
    drop_backups(home, "last_rebalance")
    before = sorted(p.name for p in (home / "backups").iterdir())
    state_before = {n: state(home, n).read_bytes() for n in STATE_FILES[1:]}
    refused = run(home)
    assert refused.returncode == 3, refused.stderr
    assert sorted(p.name for p in (home / "backups").iterdir()) == sorted(
        [*before, ".recovery.json"]), "a refused run wrote nothing but its record"
    assert {n: state(home, n).read_bytes() for n in STATE_FILES[1:]} == state_before
    fresh = run(home, "--accept-fresh-state")
    assert fresh.returncode == 0, fresh.stderr
    live = state(home, "paper_account.json").read_bytes()
    assert live in complete_backups(home, "paper_account.json")


# --- 10. a drop-in host in the original's style -------------------------------------------


HOST = '''
"""An existing DalioLite in the original specification's style, package dropped in."""
import hashlib
import json
import shutil
import sys
from datetime import datetime
from pathlib import Path

from backup_manager import BackupManager, recover

STATE = Path("state/last_rebalance.json")


def original_backup(state_file_path, now):
    """The original module's backup_state_file: local time, whole seconds."""
    state_file = Path(state_file_path)
    backup_dir = Path("backups")
    backup_dir.mkdir(parents=True, exist_ok=True)
    timestamp = now.strftime("%Y-%m-%d_%H-%M-%S")
    backup_path = backup_dir / f"{state_file.stem}_{timestamp}{state_file.suffix}"
    shutil.copy2(state_file, backup_path)
    sha256 = hashlib.sha256()
    with open(backup_path, "rb") as f:
        for chunk in iter(lambda: f.read(4096), b""):
            sha256.update(chunk)
    with open(backup_path.with_suffix(".json.sha256"), "w") as f:
        f.write(f"{sha256.hexdigest()}  {backup_path.name}\\n")


def save_rebalance_date(bm, now=None):
    STATE.parent.mkdir(exist_ok=True)
    STATE.write_text(json.dumps({"timestamp": (now or datetime.now()).isoformat()}))
    if now is not None:
        original_backup(str(STATE), now)  # as the original module did, before the drop-in
    else:
        bm.backup_state_file(str(STATE))


def main(argv):
    bm = BackupManager(backup_dir="backups", retention_days=30, cloud_enabled=False)
    if argv[:1] == ["legacy-save"]:  # the host before the package was dropped in
        save_rebalance_date(bm, datetime.fromisoformat(argv[1]))
        return
    report = recover(bm, ["state/last_rebalance.json"])
    print("start-up:", "restored" if report.restored else
          "first run" if report.first_run else "kept")
    if argv[:1] == ["save"]:
        save_rebalance_date(bm)


if __name__ == "__main__":
    main(sys.argv[1:])
'''

ONE_LINER_LATEST = textwrap.dedent('''
    from backup_manager import BackupManager
    bm = BackupManager()
    success = bm.restore_from_backup("state/last_rebalance.json")
    print("Restore:", "SUCCESS" if success else "FAILED")
''')

ONE_LINER_SPECIFIC = textwrap.dedent('''
    from backup_manager import BackupManager
    bm = BackupManager()
    success = bm.restore_from_backup("state/last_rebalance.json", "{stamp}")
    print("Restore:", "SUCCESS" if success else "FAILED")
''')


def test_drop_in_host_in_the_original_style(tmp_path):
    site = tmp_path / "old-dalio"
    site.mkdir()
    (site / "host.py").write_text(HOST)
    env = _env({"TZ": "EST+5"})  # local time is not UTC

    def python(*args):
        done = subprocess.run([sys.executable, *args], cwd=site, capture_output=True,
                              text=True, env=env, stdin=subprocess.DEVNULL, timeout=TIMEOUT)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    older = (datetime.now() - timedelta(days=3)).replace(microsecond=0)
    newer = older + timedelta(days=1)
    python("host.py", "legacy-save", older.isoformat())
    python("host.py", "legacy-save", newer.isoformat())
    stamps = [f"{t:%Y-%m-%d_%H-%M-%S}" for t in (older, newer)]
    legacy = [site / "backups" / f"last_rebalance_{s}.json" for s in stamps]
    assert all(p.exists() and Path(f"{p}.sha256").exists() for p in legacy)
    newer_bytes = legacy[1].read_bytes()

    bm = BackupManager(site / "backups")
    listed = bm.list_backups(site / "state" / "last_rebalance.json")
    assert [b.name for b in listed] == [legacy[1].name, legacy[0].name]
    assert all(b.complete for b in listed)

    (site / "state" / "last_rebalance.json").unlink()
    assert "restored" in python("host.py")
    assert (site / "state" / "last_rebalance.json").read_bytes() == newer_bytes

    python("host.py", "save")
    saved = (site / "state" / "last_rebalance.json").read_bytes()
    listed = bm.list_backups(site / "state" / "last_rebalance.json")
    assert len(listed) == 3 and listed[0].name.endswith("Z.json")
    assert listed[0].path.read_bytes() == saved

    (site / "state" / "last_rebalance.json").unlink()
    assert "restored" in python("host.py")
    assert (site / "state" / "last_rebalance.json").read_bytes() == saved

    out = python("-c", ONE_LINER_SPECIFIC.format(stamp=stamps[0]))
    assert "Restore: SUCCESS" in out
    assert (site / "state" / "last_rebalance.json").read_bytes() == legacy[0].read_bytes()
    out = python("-c", ONE_LINER_LATEST)
    assert "Restore: SUCCESS" in out
    assert (site / "state" / "last_rebalance.json").read_bytes() == saved
    python("-m", "backup_manager", "verify")
    check = subprocess.run("sha256sum -c *.sha256", shell=True, cwd=site / "backups",
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


# --- more attacks on 8, 10, 11 ------------------------------------------------------------


_KILLED_IN_CATCH_UP = '''
import os, signal, sys
from dalio_lite import DalioLite
bot = DalioLite(sys.argv[1])
store = bot.backup_manager.store
real = store.create_backup
def backup_then_die(*args, **kwargs):
    made = real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)  # killed between two steps of the catch-up
    return made
store.create_backup = backup_then_die
bot.run_daily_check()
'''


def test_kill_between_two_catch_up_backups_is_finished_by_the_next_run(home):
    first_run(home)
    shutil.rmtree(home / "backups")
    killed = subprocess.run([sys.executable, "-c", _KILLED_IN_CATCH_UP,
                             str(home / "config.yaml")], cwd=home.parent, capture_output=True,
                            text=True, env=_env(), timeout=TIMEOUT)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    backed = [n for n in STATE_FILES if complete_backups(home, n)]
    assert len(backed) == 1, f"precondition: killed after one backup, have {backed}"
    problem = backup_cli(home, "status")
    assert problem.returncode == 1, "status says OK with live bytes no backup holds"
    after = run(home)
    assert after.returncode == 0, after.stderr
    assert_every_file_backed_up(home)
    assert backup_cli(home, "verify").returncode == 0
    assert backup_cli(home, "status").returncode == 0


def test_two_runs_at_once_after_a_loss_restore_once_and_never_trade(home):
    first_run(home)
    original = state(home, "last_rebalance.json").read_bytes()
    state(home, "last_rebalance.json").unlink()
    move_prices(home)
    command = [sys.executable, str(ROOT / "dalio_lite.py"), "--config", str(home / "config.yaml")]
    procs = [subprocess.Popen(command, cwd=home.parent, stderr=subprocess.PIPE, text=True,
                              env=_env(), stdin=subprocess.DEVNULL) for _ in range(2)]
    errs = [p.communicate(timeout=TIMEOUT)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    assert not any("order:" in e for e in errs), "traded while the last rebalance was lost"
    assert state(home, "last_rebalance.json").read_bytes() == original
    assert_every_file_backed_up(home)


def test_live_bytes_no_backup_holds_are_a_problem_until_the_next_run(home):
    first_run(home)
    account = json.loads(state(home, "paper_account.json").read_text())
    account["cash"] += 1.0  # changed by hand, outside DalioLite
    state(home, "paper_account.json").write_text(json.dumps(account))
    problem = backup_cli(home, "status")
    assert problem.returncode == 1
    assert "paper_account.json" in problem.stdout
    assert run(home).returncode == 0
    assert_every_file_backed_up(home)
    ok = backup_cli(home, "status")
    assert ok.returncode == 0, ok.stdout


@pytest.mark.parametrize("change,folder", [
    (_no_state_files, "state"),
    (_no_backup_section, "state"),
    (_state_dir_data, "data"),
], ids=["no backup.state_files", "no backup section", "state.dir data"])
def test_status_sees_unsaved_live_bytes_whatever_keys_are_left_out(home, change, folder):
    """DalioLite runs with its three default state files when backup.state_files is left
    out; `python -m backup_manager --config ... status` must still report live bytes no
    backup holds (promise 10), not OK."""
    edit_config(home, change)
    first_run(home)
    path = state(home, "paper_account.json", folder)
    account = json.loads(path.read_text())
    account["cash"] += 1.0
    path.write_text(json.dumps(account))
    if change is _no_backup_section:
        # No backup section, so no backup.status_hook: the module's own command line
        # cannot know the host's live files (README says so); DalioLite's status can.
        shown = run(home, "--status")
    else:
        shown = backup_cli(home, "status")
    assert shown.returncode == 1, (
        f"status says OK while {path} holds bytes no backup holds:\n{shown.stdout}")
    assert "paper_account.json" in shown.stdout


def test_operator_restore_of_an_older_rebalance_is_kept_and_recorded(home):
    """Older state is installed on purpose, acknowledged on the host's command line, and
    then honoured and recorded: first a hand-written rebalance date 40 days back, then a
    restore of the first run's (recent) one, which an older point holds."""
    first_run(home)
    first_stamp = BackupManager(home / "backups").list_backups(
        state(home, "last_rebalance.json"))[-1].name[len("last_rebalance_"):-len(".json")]
    older = {"timestamp": (datetime.now(UTC) - timedelta(days=40)).isoformat()}
    state(home, "last_rebalance.json").write_text(json.dumps(older))
    refused = run(home)
    assert refused.returncode == 3 and "day(s) before" in refused.stderr, refused.stderr
    assert run(home, "--accept-rollback").returncode == 0
    current = state(home, "last_rebalance.json").read_bytes()
    back = backup_cli(home, "restore", str(state(home, "last_rebalance.json")),
                      "--timestamp", first_stamp, "--yes")
    assert back.returncode == 0, back.stdout + back.stderr
    restored = state(home, "last_rebalance.json").read_bytes()
    assert restored != current
    assert run(home).returncode == 3, "the restore of an older point is a rollback too"
    done = run(home, "--accept-rollback")
    assert done.returncode == 0, done.stderr
    assert orders_in(done) == [], "the restored (recent) rebalance was not honoured"
    assert state(home, "last_rebalance.json").read_bytes() == restored
    assert_every_file_backed_up(home)
    assert run(home).returncode == 0, "acknowledged once, the rollback is the history"
