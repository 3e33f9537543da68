"""The clock and the order of backups (promise 9): newest means most recently made,
whatever the clock does; retention and verify are not fooled by a stamp from the
future; a timestamp ahead of the clock is content, not corruption."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backup_manager import BackupManager
from tests.helpers import ROOT, rebalance_doc
from tests.reliability.procs import cli, lock_held, needs_faketime, wait_until_open


def stamp_forms(when: datetime) -> set[str]:
    """Ways a message may name an instant: as in a backup name, or ISO-8601."""
    return {when.strftime("%Y-%m-%d_%H-%M-%S"), when.strftime("%Y-%m-%dT%H:%M:%S"),
            when.strftime("%Y-%m-%d %H:%M:%S")}


def plant_legacy(folder: Path, name: str, content: bytes) -> None:
    """A complete backup as the original module named it (local time, whole seconds)."""
    folder.mkdir(exist_ok=True)
    (folder / name).write_bytes(content)
    (folder / (name + ".sha256")).write_text(f"{hashlib.sha256(content).hexdigest()}  {name}\n")


# --- 1. order is the order backups were made ------------------------------------------


def test_clock_stepping_back_an_hour_keeps_creation_order(project, state_file):
    now = [datetime.now(UTC)]
    bm = BackupManager(clock=lambda: now[0])
    state_file.write_bytes(rebalance_doc(n="earlier"))
    first = bm.backup_state_file(state_file)
    now[0] -= timedelta(hours=1)
    later = rebalance_doc(n="later")
    state_file.write_bytes(later)
    second = bm.backup_state_file(state_file)
    assert second.name > first.name, (
        f"the later backup {second.name} sorts before the earlier {first.name}")
    state_file.unlink()
    BackupManager().restore(state_file)
    assert state_file.read_bytes() == later, "restore returned the earlier backup's bytes"


def test_clock_behind_the_newest_stamp_is_warned_naming_both(project, state_file, caplog):
    ahead = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=250000)
    behind = ahead - timedelta(hours=1)
    now = [ahead]
    bm = BackupManager(clock=lambda: now[0])
    bm.backup_state_file(state_file)
    now[0] = behind
    state_file.write_bytes(rebalance_doc(n="behind"))
    with caplog.at_level(logging.WARNING, logger="backup_manager"):
        bm.backup_state_file(state_file)
    warnings = [r.getMessage() for r in caplog.records
                if r.name.startswith("backup_manager") and r.levelno >= logging.WARNING]
    about_clock = [m for m in warnings if "clock" in m.lower()]
    assert about_clock, f"no WARNING about the clock being behind; warnings: {warnings}"
    message = about_clock[0]
    assert any(form in message for form in stamp_forms(behind)), \
        f"the warning does not name the clock's time {behind}: {message}"
    assert any(form in message for form in stamp_forms(ahead)), \
        f"the warning does not name the newest stamp {ahead}: {message}"


def test_backup_made_under_faketime_an_hour_behind_is_still_the_newest(project):
    needs_faketime()
    state = project / "state" / "x.json"
    state.write_bytes(b'{"version": 1}\n')
    first = cli(project, "backup", "state/x.json")
    assert first.returncode == 0, first.stdout + first.stderr
    state.write_bytes(b'{"version": 2}\n')
    behind = cli(project, "backup", "state/x.json", faketime=["-f", "-1h"])
    assert behind.returncode == 0, behind.stdout + behind.stderr
    state.unlink()
    restored = cli(project, "restore", "state/x.json", "--yes")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert state.read_bytes() == b'{"version": 2}\n', \
        "restore returned the backup made before the one taken under a clock 1 h behind"


def test_a_clock_that_stands_still_never_reuses_a_name(project, state_file):
    fixed = datetime.now(UTC) - timedelta(minutes=10)
    bm = BackupManager(keep_last=3, keep_daily=0, clock=lambda: fixed)
    names, last = [], b""
    for i in range(20):
        last = rebalance_doc(n=i)
        state_file.write_bytes(last)
        names.append(bm.backup_state_file(state_file).name)
    reused = [(i + 1, b) for i, (a, b) in enumerate(pairwise(names)) if not a < b]
    assert not reused, f"backups named no later than the one before: {reused[:3]}"
    state_file.unlink()
    BackupManager().restore(state_file)
    assert state_file.read_bytes() == last, "restore did not return the last backup made"


NEW_STYLE_AT = datetime(2026, 2, 17, 12, 0, tzinfo=UTC)
# 10:00 local on Feb 18 is 20:00 UTC on Feb 17 in Kiritimati (UTC+14) and 20:00 UTC on
# Feb 18 in Adak (UTC-10): later than 12:00 UTC on Feb 17 in both zones.
LEGACY_LATER = "last_rebalance_2026-02-18_10-00-00.json"


@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "America/Adak"])
def test_legacy_name_sorts_before_new_style_in_any_zone(project, state_file, zone):
    new_style = rebalance_doc(n="new-style")
    state_file.write_bytes(new_style)
    BackupManager(clock=lambda: NEW_STYLE_AT).backup_state_file(state_file)
    plant_legacy(project / "backups", LEGACY_LATER, rebalance_doc(n="legacy"))
    state_file.unlink()
    done = cli(project, "restore", "state/last_rebalance.json", env={"TZ": zone})
    assert done.returncode == 0, done.stdout + done.stderr
    assert state_file.read_bytes() == new_style, \
        f"TZ={zone}: the legacy backup won over the new-style one"


# --- 2. the bytes backed up are read under the lock -------------------------------------


def test_bytes_are_read_after_the_lock_is_taken(project):
    state = project / "state" / "x.json"
    state.write_bytes(b'{"version": 1}\n')
    lock = project / "backups" / ".lock"
    with lock_held(lock) as holder:
        backup = subprocess.Popen(
            [sys.executable, "-m", "backup_manager", "backup", "state/x.json"], cwd=project,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            assert wait_until_open(backup.pid, lock), "the backup never waited for the lock"
            state.write_bytes(b'{"version": 2}\n')
            holder.release()
            out, err = backup.communicate(timeout=30)
        finally:
            if backup.poll() is None:
                backup.kill()
                backup.communicate()
    assert backup.returncode == 0, out + err
    made = sorted((project / "backups").glob("x_*.json"))
    assert len(made) == 1
    assert made[0].read_bytes() == b'{"version": 2}\n', \
        "the backup holds the bytes read before the lock was taken"


# --- 3. retention counts from min(newest stamp, now) ------------------------------------


def test_one_backup_stamped_a_year_ahead_voids_no_daily_history(project, state_file):
    now = datetime.now(UTC)
    at = [now]
    maker = BackupManager(keep_last=1000, clock=lambda: at[0])
    newest_of_day = []
    for days_ago in range(10, 0, -1):
        day = datetime.combine((now - timedelta(days=days_ago)).date(), datetime.min.time(),
                               UTC)
        for hour in (6, 18):
            at[0] = day + timedelta(hours=hour)
            state_file.write_bytes(rebalance_doc(n=f"{days_ago}-{hour}"))
            made = maker.backup_state_file(state_file).name
        newest_of_day.append(made)
    at[0] = now + timedelta(days=365)
    state_file.write_bytes(rebalance_doc(n="a year ahead"))
    future = maker.backup_state_file(state_file).name
    BackupManager(keep_last=1, keep_daily=30, retention_days=30).prune()
    left = {b.name for b in BackupManager().list_backups(state_file)}
    assert future in left
    lost = [n for n in newest_of_day if n not in left]
    assert not lost, f"{len(lost)} of the 10 daily backups were pruned, e.g. {lost[:2]}"


def test_backup_stamped_ahead_of_now_is_kept_and_verify_reports_it(project, state_file):
    BackupManager().backup_state_file(state_file)
    ahead = datetime.now(UTC) + timedelta(hours=2)
    state_file.write_bytes(rebalance_doc(n="ahead"))
    future = BackupManager(clock=lambda: ahead).backup_state_file(state_file)
    BackupManager(keep_last=1, keep_daily=0).prune()
    assert future.exists(), "the backup stamped ahead was removed"
    report = BackupManager().verify()
    statuses = [i.status for i in report.items if i.name == future.name]
    assert statuses == ["stamped in the future"], \
        f"verify says {statuses} for a backup stamped 2 h ahead"
    assert not report.ok


def test_status_exits_1_on_a_backup_stamped_in_the_future(project, state_file):
    BackupManager().backup_state_file(state_file)
    ahead = datetime.now(UTC) + timedelta(hours=2)
    BackupManager(clock=lambda: ahead).backup_state_file(state_file)
    done = cli(project, "status")
    assert done.returncode == 1, f"status exit {done.returncode}:\n{done.stdout}{done.stderr}"
    assert "in the future" in done.stdout + done.stderr


# --- 12. a timestamp ahead of the clock is content, not corruption -----------------------


def test_last_rebalance_written_in_tokyo_local_time_is_backed_up_and_restored(project):
    # Naive local time written in Tokyo (UTC+9), read on a machine in UTC: 9 h ahead.
    tokyo_now = (datetime.now(UTC) + timedelta(hours=9)).replace(tzinfo=None)
    content = json.dumps({"timestamp": tokyo_now.isoformat()}).encode()
    state = project / "state" / "last_rebalance.json"
    state.write_bytes(content)
    backed_up = cli(project, "backup", "state/last_rebalance.json", env={"TZ": "UTC"})
    assert backed_up.returncode == 0, backed_up.stdout + backed_up.stderr
    state.unlink()
    restored = cli(project, "restore", "state/last_rebalance.json", env={"TZ": "UTC"})
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert state.read_bytes() == content


def test_last_rebalance_ahead_of_the_clock_is_restorable_in_process(project, state_file):
    content = rebalance_doc(datetime.now(UTC) + timedelta(days=2), n="ahead")
    state_file.write_bytes(content)
    BackupManager().backup_state_file(state_file)
    state_file.unlink()
    BackupManager().restore(state_file)
    assert state_file.read_bytes() == content


# --- the property: a clock that jumps back and forth -------------------------------------

OFFSETS = st.integers(min_value=-2 * 86400 * 1000, max_value=2 * 86400 * 1000)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(offsets_ms=st.lists(OFFSETS, min_size=1, max_size=15),
       keep_last=st.integers(1, 4), keep_daily=st.integers(0, 3))
def test_restore_returns_the_last_backup_made_whatever_the_clock_does(offsets_ms, keep_last,
                                                                     keep_daily):
    base = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        state = folder / "state" / "x.json"
        state.parent.mkdir()
        at = [base]
        bm = BackupManager(folder / "backups", keep_last=keep_last, keep_daily=keep_daily,
                           durable=False, clock=lambda: at[0])
        last = last_path = None
        for i, offset in enumerate(offsets_ms):
            at[0] = base + timedelta(milliseconds=offset)
            last = json.dumps({"n": i, "offset_ms": offset}).encode()
            state.write_bytes(last)
            last_path = bm.backup_state_file(state)
        state.unlink()
        bm.restore(state)
        assert state.read_bytes() == last, "restore did not return the last backup made"
        bm.prune()
        assert last_path.exists(), "prune removed the last backup made"
