"""The DalioLite host: backups after every state write, recovery at start-up, and
never a trade on lost state. Most cases run the real command in a subprocess."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from backup_manager import BackupManager, ConfigError, IntentNotCommitted
from dalio_lite import AlpacaBroker, DalioLite
from tests.helpers import ROOT

STATE_FILES = ("last_rebalance.json", "paper_account.json", "autopilot_status.json")


def run(home, *args, cwd=None):
    cwd = cwd or home.parent
    return subprocess.run(
        [sys.executable, str(ROOT / "dalio_lite.py"), "--config", str(home / "config.yaml"),
         *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def status(home):
    return json.loads((home / "state" / "autopilot_status.json").read_text())


def backups(home, stem):
    return sorted(p for p in (home / "backups").glob(f"{stem}_*.json"))


def orders_in(proc):
    return [line for line in proc.stderr.splitlines() if "order:" in line]


def test_first_run_rebalances_and_backs_up_every_state_file(home):
    first = run(home)
    assert first.returncode == 0, first.stderr
    assert len(orders_in(first)) == 4
    assert status(home)["outcome"] == "rebalanced"
    bm = BackupManager(home / "backups")
    for name in STATE_FILES:
        live = (home / "state" / name).read_bytes()
        newest = bm.list_backups(home / "state" / name)[0]
        assert newest.complete and newest.path.read_bytes() == live
    assert bm.verify().ok
    account = json.loads((home / "state" / "paper_account.json").read_text())
    assert set(account["positions"]) == {"VTI", "TLT", "GLD", "DBC"}

    second = run(home)
    assert second.returncode == 0, second.stderr
    assert orders_in(second) == []
    assert status(home)["outcome"] == "no_action"
    assert json.loads((home / "state" / "paper_account.json").read_text()) == account


def test_autopilot_status_has_documented_keys(home):
    run(home)
    doc = status(home)
    assert set(doc) == {"last_run", "outcome", "reason", "next_eligible_rebalance",
                        "last_backup", "last_backup_error", "fresh_start", "rebalance_on_record",
                        "broker", "state_files", "run_command"}
    assert doc["broker"] == {"kind": "paper", "account": None, "since": None}
    assert doc["last_backup_error"] is None
    assert doc["last_backup"].startswith("last_rebalance_")
    assert datetime.fromisoformat(doc["next_eligible_rebalance"]) > datetime.now(UTC)


def test_deleted_last_rebalance_is_restored_and_no_trade(home):
    run(home)
    original = (home / "state" / "last_rebalance.json").read_bytes()
    (home / "state" / "last_rebalance.json").unlink()
    again = run(home)
    assert again.returncode == 0, again.stderr
    assert orders_in(again) == []
    assert (home / "state" / "last_rebalance.json").read_bytes() == original
    assert "recovered" in again.stderr and "last_rebalance_" in again.stderr


def test_garbage_state_is_restored_and_kept_under_corrupt(home):
    run(home)
    original = (home / "state" / "last_rebalance.json").read_bytes()
    (home / "state" / "last_rebalance.json").write_bytes(b"\x00garbage{")
    again = run(home)
    assert again.returncode == 0, again.stderr
    assert orders_in(again) == []
    assert (home / "state" / "last_rebalance.json").read_bytes() == original
    kept = [p.read_bytes() for p in (home / "backups" / "corrupt").glob("last_rebalance_*.json")]
    assert kept == [b"\x00garbage{"]


def test_whole_state_folder_deleted_is_recovered(home):
    run(home)
    before = {n: (home / "state" / n).read_bytes() for n in STATE_FILES[:2]}
    shutil.rmtree(home / "state")
    again = run(home)
    assert again.returncode == 0, again.stderr
    assert orders_in(again) == []
    for name, data in before.items():
        assert (home / "state" / name).read_bytes() == data


def _damage_all(home, stem):
    for p in backups(home, stem):
        p.write_bytes(p.read_bytes()[:-3])


def test_lost_state_with_damaged_backups_refuses_to_trade(home):
    run(home)
    account = (home / "state" / "paper_account.json").read_bytes()
    (home / "state" / "last_rebalance.json").unlink()
    _damage_all(home, "last_rebalance")
    refused = run(home)
    assert refused.returncode == 3, refused.stderr
    assert orders_in(refused) == []
    assert (home / "state" / "paper_account.json").read_bytes() == account
    assert "refusing to trade" in refused.stderr
    # Every backup of it is damaged: no restore can work, so none is offered.
    assert "verify" in refused.stderr and "--accept-fresh-state" in refused.stderr
    assert "backup_manager --config" in refused.stderr and " restore /" not in refused.stderr
    assert status(home)["outcome"] == "rebalanced", "a refusal writes no state"
    record = json.loads((home / "backups" / ".recovery.json").read_text())
    assert record["refused"]["kind"] == "damaged"


def test_everything_deleted_and_damaged_refuses(home):
    run(home)
    shutil.rmtree(home / "state")
    for stem in ("last_rebalance", "paper_account", "autopilot_status"):
        _damage_all(home, stem)
    refused = run(home)
    assert refused.returncode == 3
    assert orders_in(refused) == []
    assert not (home / "state" / "paper_account.json").exists()


def test_accept_fresh_state_moves_damage_aside_and_next_run_proceeds(home):
    run(home)
    (home / "state" / "last_rebalance.json").unlink()
    _damage_all(home, "last_rebalance")
    fresh = run(home, "--accept-fresh-state")
    assert fresh.returncode == 0, fresh.stderr
    assert "accept-fresh-state" in fresh.stderr
    assert list((home / "backups" / "corrupt").glob("last_rebalance_*"))
    normal = run(home)
    assert normal.returncode == 0, normal.stderr


def test_invalid_live_file_without_backups_refuses(home):
    (home / "state").mkdir()
    (home / "state" / "last_rebalance.json").write_text("{not json")
    refused = run(home)
    assert refused.returncode == 3
    assert "exists but is invalid" in refused.stderr


def test_other_working_directory_creates_nothing_there(home, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = run(home, cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert list(elsewhere.iterdir()) == []
    assert (home / "state" / "last_rebalance.json").exists()
    assert backups(home, "last_rebalance")


def test_dry_run_places_no_orders_and_writes_no_state(home):
    dry = run(home, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "decision: rebalanced" in dry.stderr
    assert orders_in(dry) == []
    assert not (home / "state" / "last_rebalance.json").exists()


def test_status_prints_json(home):
    run(home)
    shown = run(home, "--status")
    assert shown.returncode == 0
    doc = json.loads(shown.stdout)
    assert doc["autopilot"]["outcome"] == "rebalanced"
    assert {s["state_file"] for s in doc["backups"]["state_files"]} == set(STATE_FILES)


def test_backups_folder_that_is_a_file_never_fails_a_run_without_orders(home):
    assert run(home).returncode == 0
    shutil.rmtree(home / "backups")
    (home / "backups").write_text("not a folder")
    done = run(home)
    assert done.returncode == 0, done.stderr
    doc = status(home)
    assert doc["outcome"] == "no_action"
    assert "backups" in doc["last_backup_error"]


def test_orders_wait_for_their_intent_a_backups_folder_that_is_a_file_places_none(home):
    """Promise 15: without the intent committed before them, a run stopped between its
    orders and its record would place them again: no intent, no order."""
    assert run(home).returncode == 0
    account = (home / "state" / "paper_account.json").read_bytes()
    shutil.rmtree(home / "backups")
    (home / "backups").write_text("not a folder")
    config = home / "config.yaml"
    config.write_text(config.read_text().replace("VTI: 250.0", "VTI: 400.0"))  # drift
    done = run(home, "--force-rebalance")
    assert done.returncode == 3, done.stderr
    assert orders_in(done) == []
    assert "the intent before orders could not be committed" in done.stderr
    assert (home / "state" / "paper_account.json").read_bytes() == account


def test_first_run_refuses_when_the_backups_folder_cannot_be_listed(home):
    (home / "backups").write_text("not a folder")
    done = run(home)
    assert done.returncode == 3, done.stderr
    assert orders_in(done) == []
    assert "Not a directory" in done.stderr and "refusing to trade" in done.stderr


def fill_disk_of(folder, monkeypatch):
    """Every write into `folder` fails as on a full disk (ENOSPC), from now on."""
    real_write = os.write

    def write(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(folder)):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)


def test_disk_full_during_backup_never_fails_the_save(home, monkeypatch):
    assert DalioLite(home / "config.yaml").run_daily_check().outcome == "rebalanced"
    before = sorted(p.name for p in (home / "backups").iterdir())
    fill_disk_of(home / "backups", monkeypatch)
    decision = DalioLite(home / "config.yaml").run_daily_check()
    monkeypatch.undo()
    assert decision.outcome == "no_action"
    assert status(home)["outcome"] == "no_action", "the state was saved"
    assert "No space left" in status(home)["last_backup_error"]
    assert sorted(p.name for p in (home / "backups").iterdir()) == before, \
        "nothing half-written is left in backups/"


def test_disk_full_before_the_orders_places_none(home, monkeypatch):
    fill_disk_of(home / "backups", monkeypatch)
    with pytest.raises(IntentNotCommitted, match="No space left"):
        DalioLite(home / "config.yaml").run_daily_check()
    monkeypatch.undo()
    assert not (home / "state" / "paper_account.json").exists(), "no order was placed"
    assert not (home / "state" / "last_rebalance.json").exists()
    leftovers = [p.name for p in (home / "backups").iterdir() if p.name not in (".lock",
                                                                               ".writer")]
    assert leftovers == [], "nothing half-written is left in backups/"


def test_two_runs_at_once_rebalance_exactly_once(home):
    procs = [subprocess.Popen(
        [sys.executable, str(ROOT / "dalio_lite.py"), "--config", str(home / "config.yaml")],
        stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert sum("decision: rebalanced" in out for out in outputs) == 1
    assert sum(len([ln for ln in out.splitlines() if "order:" in ln]) for out in outputs) == 4


def test_legacy_naive_timestamp_is_read_as_local_time(home):
    (home / "state").mkdir()
    naive = (datetime.now() - timedelta(days=2)).replace(microsecond=0).isoformat()
    (home / "state" / "last_rebalance.json").write_text(json.dumps({"timestamp": naive}))
    bot = DalioLite(home / "config.yaml")
    assert bot.last_rebalance() == datetime.fromisoformat(naive).astimezone().astimezone(
        UTC)
    assert bot.run_daily_check().outcome == "no_action"


@pytest.mark.parametrize("change,message", [
    ({"allocation": {"VTI": 0.5, "TLT": 0.3}}, "sum to 1.0"),
    ({"rebalancing": {"drift_treshold": 0.1}}, "unknown key.*drift_treshold"),
    ({"rebalancing": {"min_days_between": -1}}, "min_days_between"),
    ({"brokr": {}}, "unknown key.*brokr"),
    ({"broker": {"kind": "robinhood"}}, "broker.kind"),
    ({"broker": {"base_url": "ftp://127.0.0.1:1"}}, "broker.base_url"),
    ({"broker": {"base_url": "https://paper-api.alpaca.markets/v2"}}, "without the /v2"),
    ({"broker": {"read_timeout_seconds": 0}}, "broker.read_timeout_seconds"),
    ({"broker": {"connect_timeout_seconds": "5"}}, "broker.connect_timeout_seconds"),
    ({"broker": {"paper_fills": "later"}}, "broker.paper_fills must be immediate or next_run"),
    ({"backup": {"keep_last": "ten"}}, "backup.keep_last"),
])
def test_bad_config_is_a_clear_error(home, change, message):
    import yaml

    doc = yaml.safe_load((home / "config.yaml").read_text())
    for section, values in change.items():
        if section in doc and isinstance(doc[section], dict) and section != "allocation":
            doc[section].update(values)
        else:
            doc[section] = values
    (home / "config.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=message):
        DalioLite(home / "config.yaml")
    proc = run(home)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr


def test_alpaca_without_package_or_keys_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("ALPACA_API_KEY", raising=False)
    monkeypatch.setitem(sys.modules, "alpaca", None)
    monkeypatch.setitem(sys.modules, "alpaca.trading", None)
    monkeypatch.setitem(sys.modules, "alpaca.trading.client", None)
    with pytest.raises(ConfigError, match="alpaca-py"):
        AlpacaBroker()



def test_paper_account_with_or_without_orders_is_valid_and_bad_orders_are_not():
    from backup_manager import InvalidStateError, validate_content

    older = {"cash": 10.0, "positions": {"VTI": 1.5}}  # as accounts and backups were
    validate_content("paper_account.json", json.dumps(older).encode())
    order = {"client_order_id": "daliolite-x", "symbol": "VTI", "side": "buy",
             "notional": 100.0, "filled": 0.0, "status": "open"}
    validate_content("paper_account.json", json.dumps({**older, "orders": [order]}).encode())
    for orders in ({"VTI": 1}, [{"symbol": "VTI"}], ["daliolite-x"]):
        with pytest.raises(InvalidStateError, match="orders must be a list of orders"):
            validate_content("paper_account.json",
                             json.dumps({**older, "orders": orders}).encode())
