"""The Backups page (dashboard/backups.py) under Streamlit's AppTest: a healthy site,
a site with each PROBLEM that `status` reports, the copy queues, verify and drill,
the restore confirmation, and no restore when the page is served beyond localhost.
The page finds its config through DALIO_CONFIG."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from backup_manager import BackupManager, StateUnrecoverableError
from backup_manager.formats import format_backup_name
from tests.helpers import ROOT, rebalance_doc

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest

PAGE = ROOT / "dashboard" / "backups.py"
STATE_FILES = ("last_rebalance.json", "paper_account.json", "autopilot_status.json")


# --- sites ----------------------------------------------------------------------------


def configure(home, **backup):
    """The shipped config.yaml (paper broker, DalioLite's status hook) with `backup` keys."""
    doc = yaml.safe_load((ROOT / "config.yaml").read_text())
    doc["backup"].update(backup)
    (home / "config.yaml").write_text(yaml.safe_dump(doc))


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A DalioLite installation in its own folder; the page is pointed at it."""
    folder = tmp_path / "bot"
    folder.mkdir()
    configure(folder)
    monkeypatch.setenv("DALIO_CONFIG", str(folder / "config.yaml"))
    monkeypatch.delenv("DALIO_BACKUP_MAX_AGE_HOURS", raising=False)
    return folder


def daily_run(home):
    """One real DalioLite daily check: state files written and backed up."""
    from dalio_lite import DalioLite

    DalioLite(home / "config.yaml").run_daily_check()


def manager(home):
    return BackupManager.from_config(home / "config.yaml")


def plant(home, stem, when, data):
    """A complete backup with the name a backup made at `when` would have."""
    name = format_backup_name(stem, ".json", when)
    (home / "backups" / name).write_bytes(data)
    (home / "backups" / (name + ".sha256")).write_text(
        f"{hashlib.sha256(data).hexdigest()}  {name}\n")
    return name


def snapshot(folder):
    """Every file and folder under `folder`: bytes and modification time."""
    return {str(p): (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns)
            for p in sorted(Path(folder).rglob("*"))}


@contextmanager
def lock_held(path):
    """Another process holds `path` with the module's file_lock, as DalioLite holds its
    run lock during a daily check (or a backup holds backups/.lock)."""
    code = ("import sys\nfrom backup_manager import file_lock\n"
            "with file_lock(sys.argv[1], 5):\n"
            "    print('held', flush=True)\n    sys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout.readline().strip() == "held"
        yield
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


@contextmanager
def bound_to(address):
    """The page served as `streamlit run --server.address ADDRESS` serves it (None: the
    option unset, so streamlit listens on every interface)."""
    from streamlit import config

    before = config.get_option("server.address")
    config.set_option("server.address", address)
    try:
        yield
    finally:
        config.set_option("server.address", before)


@pytest.fixture(autouse=True)
def served_on_localhost():
    """Every page here is served as README starts it, on 127.0.0.1, unless a test says
    otherwise."""
    with bound_to("127.0.0.1"):
        yield


# --- the page -------------------------------------------------------------------------


def page():
    at = AppTest.from_file(str(PAGE), default_timeout=30)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def alerts(at, kind):
    return [e.value for e in getattr(at, kind)]


def health_line(at, name):
    """(colour, text) of the health line of one state file."""
    found = [(colour, text) for colour, kind in (("green", "success"), ("amber", "warning"),
                                                  ("red", "error"))
             for text in alerts(at, kind) if text.startswith(f"**{name}**")]
    assert len(found) == 1, found
    return found[0]


def chart_rows(at):
    import pyarrow as pa

    # the element's name in AppTest: vega_lite_chart, arrow_vega_lite_chart before 1.4x
    (chart,) = at.get("vega_lite_chart") or at.get("arrow_vega_lite_chart")
    spec = json.loads(chart.proto.spec)
    table = pa.ipc.open_stream(io.BytesIO(chart.proto.data.data)).read_all()
    return spec, table.to_pylist()


def banner(at):
    return next(t for t in alerts(at, "success") + alerts(at, "error")
                if t.startswith("status: "))


# --- health ---------------------------------------------------------------------------


def test_healthy_site(home):
    daily_run(home)
    before = snapshot(home)
    at = page()
    assert banner(at) == "status: OK"
    for name in STATE_FILES:
        colour, text = health_line(at, name)
        assert colour == "green" and "live file backed up" in text, text
    assert alerts(at, "error") == [] and alerts(at, "warning") == []
    spec, rows = chart_rows(at)
    bm = manager(home)
    local = {(name, b.name) for name in STATE_FILES for b in bm.list_backups(name)}
    assert {(r["state_file"], r["backup"]) for r in rows} == local
    assert {r["copy"] for r in rows} == {"local"}
    assert spec["encoding"]["x"] == {"field": "time", "type": "temporal",
                                     "title": "backup time (UTC)", "scale": {"type": "utc"}}
    assert spec["encoding"]["color"]["field"] == "copy"
    assert any("no mirror folder or S3 bucket configured" in t for t in alerts(at, "info"))
    assert any("already holds the newest restore point" in m.value for m in at.markdown)
    assert "restore_button" not in [b.key for b in at.button], "nothing to restore"
    at.selectbox(key="restore_file").select("paper_account.json").run()
    older = manager(home).list_backups("paper_account.json")[-1].name
    at.selectbox(key="restore_backup").select(older).run()
    assert not at.exception
    assert any(f"**Installs** `{older}`" in m.value for m in at.markdown)
    assert snapshot(home) == before, "showing the page and a restore plan writes nothing"


def test_the_history_is_shown_as_restore_points(home):
    daily_run(home)
    daily_run(home)
    at = page()
    (table,) = [d for d in at.dataframe if "point" in d.value.columns]
    rows = table.value.to_dict("records")
    history = manager(home).history()
    assert [r["point"] for r in rows] == sorted(history.locations, reverse=True)
    newest = history.newest()
    assert (rows[0]["kind"], rows[0]["writer"], rows[0]["why"]) == (
        newest.kind, newest.writer, newest.reason)
    assert rows[0]["stores"] == str(home / "backups")


def test_a_refusing_host_is_red_with_its_commands(home):
    from dalio_lite import DalioLite

    daily_run(home)
    (home / "state" / "last_rebalance.json").unlink()
    for backup in (home / "backups").glob("last_rebalance_*.json"):
        backup.write_bytes(b"{}")
    with pytest.raises(StateUnrecoverableError):
        DalioLite(home / "config.yaml").run_daily_check()
    at = page()
    assert banner(at).startswith("status: PROBLEM")
    (line,) = [t for t in alerts(at, "error") if "refuses to trade" in t]
    assert "no store holds those bytes intact" in line and "--accept-fresh-state" in line


def no_state_files(home):
    # Without the host's hook nothing names the live files (with it, DalioLite does).
    configure(home, state_files=[], status_hook=None)


def host_recorded_an_error(home):
    daily_run(home)
    path = home / "state" / "autopilot_status.json"
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "last_backup_error": "2026-11-01T00:00:00 disk full"}))
    manager(home).backup_state_file(path)


def live_not_backed_up(home):
    daily_run(home)
    (home / "state" / "paper_account.json").write_text(
        json.dumps({"cash": 5.0, "positions": {"VTI": 1.0}}))


def stamped_in_future(home):
    daily_run(home)
    return plant(home, "last_rebalance", datetime.now(UTC) + timedelta(days=3),
                 rebalance_doc(n="ahead"))


def no_valid_backup(home):
    daily_run(home)
    for info in manager(home).list_backups("last_rebalance.json"):
        info.path.write_bytes(rebalance_doc(n="damaged"))  # no longer matches its sidecar


def too_old(home, monkeypatch):
    monkeypatch.setenv("DALIO_BACKUP_MAX_AGE_HOURS", "24")
    (home / "state").mkdir()
    docs = {"last_rebalance.json": rebalance_doc(), "autopilot_status.json": b"{}",
            "paper_account.json": b'{"cash": 1.0, "positions": {}}'}
    then = datetime.now(UTC) - timedelta(hours=30)
    bm = BackupManager.from_config(home / "config.yaml", clock=lambda: then)
    for name, data in docs.items():
        (home / "state" / name).write_bytes(data)
        bm.backup_state_file(home / "state" / name)


def unmounted_mirror(home):
    """A mirror added after the first run, whose drive is not mounted (its parent is
    missing): the copies of the next backups wait in the outbox."""
    daily_run(home)
    configure(home, mirror_dirs=["mnt/mirror"])
    bm = manager(home)
    for name in STATE_FILES:
        bm.backup_state_file(home / "state" / name)


def conflicting_copy(home):
    unmounted_mirror(home)
    (home / "mnt" / "mirror").mkdir(parents=True)
    first = manager(home).outbox.pending()[0].name
    (home / "mnt" / "mirror" / first).write_bytes(b'{"other": "bytes"}')
    manager(home).sync()


def pending_too_long(home, monkeypatch):
    unmounted_mirror(home)
    monkeypatch.setenv("DALIO_BACKUP_MAX_AGE_HOURS", "0.0002")  # 0.72 s
    time.sleep(1.0)


PROBLEMS = {  # the site, and what the page must show in red (a state file's, or the site's)
    "no state files": (no_state_files, None,
                       "no state files configured and no backups found"),
    "host's last backup error": (host_recorded_an_error, None,
                                 "a backup failed and was not caught up yet: "
                                 "2026-11-01T00:00:00 disk full"),
    "live bytes no backup holds": (live_not_backed_up, "paper_account.json",
                                   "holds bytes no backup holds"),
    "stamped in the future": (stamped_in_future, "last_rebalance.json",
                              "is stamped in the future"),
    "no valid backup": (no_valid_backup, "last_rebalance.json",
                        "last_rebalance.json has no valid backup"),
    "newest valid backup too old": (too_old, "autopilot_status.json",
                                    "newest valid backup is 30.0h old"),
    "conflicting copy": (conflicting_copy, None, "1 conflicting copy(ies) to"),
    "target never took a copy": (unmounted_mirror, None, "pending and it never took one"),
    "copies pending too long": (pending_too_long, None, "pending for"),
}


@pytest.mark.parametrize("case", list(PROBLEMS))
def test_each_problem_is_shown_in_red(home, monkeypatch, case):
    build, state_file, shown = PROBLEMS[case]
    args = (home, monkeypatch) if build in (too_old, pending_too_long) else (home,)
    build(*args)
    at = page()
    assert banner(at).startswith("status: PROBLEM"), banner(at)
    if state_file is None:
        assert any(t.startswith("**site**: ") and shown in t for t in alerts(at, "error")), \
            alerts(at, "error")
    else:
        colour, text = health_line(at, state_file)
        assert colour == "red" and shown in text and "**Fix:**" in text, text
        others = [n for n in STATE_FILES if n != state_file]
        if case != "newest valid backup too old":
            assert all(health_line(at, n)[0] == "green" for n in others)


def test_copy_queues(home):
    unmounted_mirror(home)
    at = page()
    frames = [df.value for df in at.dataframe if "point" not in df.value.columns]
    (queue,) = frames[:1]
    (row,) = queue.to_dict("records")
    assert row["target"] == str(home / "mnt" / "mirror")
    pending = manager(home).outbox.pending()
    assert row["pending"] == len(pending) > 0 and row["last success"] == "never"
    listed = frames[1].to_dict("records")
    assert sorted(r["backup"] for r in listed) == sorted(c.name for c in pending)
    (home / "mnt" / "mirror").mkdir(parents=True)
    manager(home).sync()
    at = page()
    assert banner(at) == "status: OK"
    _, rows = chart_rows(at)
    local = {r["backup"] for r in rows if r["copy"] == "local"}
    mirrored = {r["backup"] for r in rows if r["copy"] == "mirror"}
    assert mirrored == local, "sync sent every backup; each copy is its own point"


def test_missing_live_file_is_amber_not_a_problem(home):
    daily_run(home)
    (home / "state" / "paper_account.json").unlink()
    at = page()
    assert banner(at) == "status: OK"
    colour, text = health_line(at, "paper_account.json")
    assert colour == "amber" and "is missing" in text and "restores it" in text


# --- verify and drill -----------------------------------------------------------------


def test_verify_and_drill_buttons(home):
    daily_run(home)
    damaged = manager(home).list_backups("paper_account.json")[-1]
    damaged.path.write_bytes(b'{"cash": 2.0, "positions": {}}')
    before = snapshot(home)
    at = page()
    assert any("no verify run" in c.value for c in at.caption)
    at.button(key="run_verify").click().run()
    (result,) = [t for t in alerts(at, "error") if t.startswith("last verify")]
    assert "1 problem(s)" in result
    problem = at.dataframe[-1].value.to_dict("records")
    assert [(p["name"], p["status"]) for p in problem] == [(damaged.name, "checksum mismatch")]
    at.button(key="run_drill").click().run()
    (result,) = [t for t in alerts(at, "success") if t.startswith("last drill")]
    assert result.endswith("every state file can be recovered")
    drilled = at.dataframe[-1].value.to_dict("records")
    assert sorted(d["state file"] for d in drilled) == sorted(STATE_FILES)
    assert all(d["result"] == "ok" for d in drilled)
    assert snapshot(home) == before, "verify and drill change nothing"
    again = page()  # another visit shows the last results without running them
    assert any(t.startswith("last verify") for t in alerts(again, "error"))
    assert any(t.startswith("last drill") for t in alerts(again, "success"))


# --- restore --------------------------------------------------------------------------


@pytest.fixture
def two_versions(home):
    """A site whose last_rebalance.json has an older and a newer backup; the live file
    holds the newer. Returns (the page showing a restore of the older, its bytes)."""
    daily_run(home)
    live = home / "state" / "last_rebalance.json"
    older = live.read_bytes()
    live.write_bytes(rebalance_doc(n="newer"))
    manager(home).backup_state_file(live)
    at = page()
    name = manager(home).list_backups(live)[1].name
    at.selectbox(key="restore_backup").select(name).run()
    assert any(f"**Installs** `{name}`" in m.value for m in at.markdown)
    assert any("**Replaces** the valid" in m.value for m in at.markdown)
    return at, older


def confirm(at, typed):
    at.text_input(key="restore_confirm").input(typed)
    at.button(key="restore_button").click().run()
    assert not at.exception
    return alerts(at, "error"), alerts(at, "success")


def test_restore_refuses_a_wrong_name(home, two_versions):
    at, _ = two_versions
    before = snapshot(home)
    for typed in ("", "paper_account.json", "last_rebalance"):
        errors, _ = confirm(at, typed)
        assert any(e.startswith("Not restored: type last_rebalance.json exactly")
                   for e in errors), errors
    assert snapshot(home) == before


def test_restore_with_the_right_name_installs_what_was_shown(home, two_versions):
    at, older = two_versions
    live = home / "state" / "last_rebalance.json"
    newer = live.read_bytes()
    backups = {b.name for b in manager(home).list_backups(live)}
    errors, successes = confirm(at, "last_rebalance.json")
    assert any(s.startswith(f"Restored {live} from ") for s in successes), errors
    assert live.read_bytes() == older
    assert {b.name for b in manager(home).list_backups(live)} == backups, "no history rewritten"
    assert manager(home).plan_restore(live).chosen.data == newer, "the newer one is kept"
    colour, text = health_line(page(), "last_rebalance.json")
    assert colour == "amber" and "holds the bytes of" in text


def test_restore_refuses_while_dalio_lite_runs(home, two_versions):
    at, _ = two_versions
    live = home / "state" / "last_rebalance.json"
    before = live.read_bytes()
    with lock_held(home / "state" / "dalio_lite.lock"):
        errors, successes = confirm(at, "last_rebalance.json")
    assert not any(s.startswith("Restored") for s in successes)
    assert live.read_bytes() == before
    assert any(e.startswith("Not restored: DalioLite is running") for e in errors), errors
    errors, successes = confirm(at, "last_rebalance.json")
    assert any(s.startswith("Restored") for s in successes), errors


def test_restore_refuses_when_the_backups_changed_since_shown(home):
    daily_run(home)
    live = home / "state" / "last_rebalance.json"
    unsaved = rebalance_doc(n="unsaved")
    live.write_bytes(unsaved)
    at = page()
    shown = manager(home).list_backups(live)[0].name
    assert any(f"**Installs** `{shown}`" in m.value for m in at.markdown)
    manager(home).backup_state_file(live)  # a DalioLite run in between makes a newer one
    errors, _ = confirm(at, "last_rebalance.json")
    assert any(e.startswith(f"Not restored: the backups changed since the page showed {shown}")
               for e in errors), errors
    assert live.read_bytes() == unsaved


def test_restore_takes_the_backups_folder_lock(home, two_versions):
    at, _ = two_versions
    configure(home, lock_timeout_seconds=0.2)
    at.run()  # the page reads the config again
    live = home / "state" / "last_rebalance.json"
    before = live.read_bytes()
    with lock_held(home / "backups" / ".lock"):
        errors, _ = confirm(at, "last_rebalance.json")
    assert live.read_bytes() == before
    assert any("backups folder lock" in e and "is held" in e for e in errors), errors


# --- restore, beyond localhost ---------------------------------------------------------

BEYOND = {None: "every network interface", "0.0.0.0": "0.0.0.0", "::": "::",
          "192.168.1.20": "192.168.1.20"}


@pytest.mark.parametrize("address", list(BEYOND))
def test_restore_is_off_when_the_page_listens_beyond_localhost(home, tmp_path, address):
    daily_run(home)
    live = home / "state" / "last_rebalance.json"
    live.unlink()
    before = snapshot(home)
    with bound_to(address):
        at = page()
    assert any(m.value.startswith("**Installs** `last_rebalance_") for m in at.markdown)
    (refused,) = [w for w in alerts(at, "warning") if "Restore is off" in w]
    assert f"the server listens on {BEYOND[address]} (streamlit" in refused
    assert "ssh -L 8501:127.0.0.1:8501" in refused and "dashboard\\_remote\\_restore" not in \
        refused and "`dashboard_remote_restore: true`" in refused
    assert [t.key for t in at.text_input] == [] and "restore_button" not in [
        b.key for b in at.button]
    assert snapshot(home) == before
    command = refused.split("run on this machine `")[1].split("`")[0]
    argv = shlex.split(command)
    assert argv[:2] == ["python", "-m"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ran = subprocess.run([sys.executable, *argv[1:]], cwd=elsewhere, capture_output=True,
                         text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert ran.returncode == 0, ran.stderr
    assert live.exists(), "the command the page prints restores the file"


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "localhost"])
def test_restore_is_on_when_the_page_listens_on_loopback(home, address):
    daily_run(home)
    (home / "state" / "last_rebalance.json").unlink()
    with bound_to(address):
        at = page()
    assert not [w for w in alerts(at, "warning") if "Restore is off" in w]
    assert "restore_button" in [b.key for b in at.button]


def test_the_config_can_allow_restore_beyond_localhost(home):
    configure(home, dashboard_remote_restore=True)
    daily_run(home)
    live = home / "state" / "last_rebalance.json"
    backed_up = live.read_bytes()
    live.unlink()
    with bound_to(None):
        at = page()
        assert not [w for w in alerts(at, "warning") if "Restore is off" in w]
        errors, successes = confirm(at, "last_rebalance.json")
    assert any(s.startswith(f"Restored {live} from ") for s in successes), errors
    assert live.read_bytes() == backed_up


def test_restore_is_refused_when_the_config_stops_allowing_it_before_the_click(home):
    configure(home, dashboard_remote_restore=True)
    daily_run(home)
    live = home / "state" / "last_rebalance.json"
    live.unlink()
    with bound_to(None):
        at = page()
        configure(home, dashboard_remote_restore=False)
        errors, successes = confirm(at, "last_rebalance.json")
    assert not any(s.startswith("Restored") for s in successes)
    assert any(e.startswith("Not restored: the server listens on every network interface")
               and "backup.dashboard_remote_restore" in e for e in errors), errors
    assert not live.exists()


def test_restore_is_refused_when_the_config_cannot_be_read_at_the_click(home):
    configure(home, dashboard_remote_restore=True)
    daily_run(home)
    live = home / "state" / "last_rebalance.json"
    live.unlink()
    with bound_to(None):
        at = page()
        (home / "config.yaml").write_text("backup: [unclosed\n")
        confirm(at, "last_rebalance.json")
    assert not live.exists(), "a config that cannot be read allows nothing"


def test_page_without_a_config_says_how_to_give_one(tmp_path, monkeypatch):
    monkeypatch.setenv("DALIO_CONFIG", str(tmp_path / "nowhere.yaml"))
    at = AppTest.from_file(str(PAGE), default_timeout=30)
    at.run()
    (error,) = alerts(at, "error")
    assert "does not exist" in error and "DALIO_CONFIG" in error


def test_page_can_be_dropped_into_a_pages_folder(home, tmp_path):
    daily_run(home)
    pages = tmp_path / "dashboard" / "pages"
    pages.mkdir(parents=True)
    shutil.copy(PAGE, pages / "3_Backups.py")
    at = AppTest.from_file(str(pages / "3_Backups.py"), default_timeout=30)
    at.run()
    assert not at.exception and banner(at) == "status: OK"


def test_a_moved_state_folder_moves_the_run_lock_for_the_page(home):
    """state.dir moved to var/state: the page's restore waits for the run lock there
    (var/state/dalio_lite.lock, the bot's) and refuses while it is held."""
    doc = yaml.safe_load((home / "config.yaml").read_text())
    doc["state"]["dir"] = "var/state"
    doc["backup"].update(host_lock_timeout_seconds=0.5, state_files=[
        f"var/state/{n}" for n in ("last_rebalance.json", "paper_account.json",
                                   "autopilot_status.json")])
    (home / "config.yaml").write_text(yaml.safe_dump(doc))
    daily_run(home)
    live = home / "var" / "state" / "last_rebalance.json"
    live.write_bytes(rebalance_doc(n="newer"))
    manager(home).backup_state_file(live)
    at = page()
    older = manager(home).list_backups(live)[1].name
    at.selectbox(key="restore_backup").select(older).run()
    before = live.read_bytes()
    with lock_held(home / "var" / "state" / "dalio_lite.lock"):
        errors, successes = confirm(at, "last_rebalance.json")
    assert live.read_bytes() == before
    assert not any(s.startswith("Restored") for s in successes)
    assert any(e.startswith("Not restored: DalioLite is running") and "var/state/dalio_lite"
               ".lock was held for 0.5 s" in e for e in errors), errors
