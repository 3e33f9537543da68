"""SIGKILL at random instants while backing up, restoring and saving DalioLite state.

After every kill: the state file parses (old or new content, never torn), every
backup with a sidecar verifies, restore succeeds, no temp file is listed as a
backup, and a reader polling the state file never reads invalid JSON.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
import signal
import threading
import time
from datetime import UTC, datetime, timedelta

from backup_manager import BackupManager, atomic_write, fetch_verified
from backup_manager.content import validate_content
from tests.helpers import ROOT, rebalance_doc, scaled

FORK = multiprocessing.get_context("fork")


def backup_loop(folder, ready):
    os.chdir(folder)
    bm = BackupManager(keep_last=5, keep_daily=0)
    i = 0
    ready.set()
    while True:
        i += 1
        atomic_write("state/last_rebalance.json", rebalance_doc(n=i, pad="x" * (i % 700)))
        bm.backup_state_file("state/last_rebalance.json")


def restore_loop(folder, ready):
    os.chdir(folder)
    bm = BackupManager(keep_last=50)
    names = [b.name for b in bm.list_backups("state/last_rebalance.json")]
    stamps = [n[len("last_rebalance_"):-len(".json")] for n in names]
    ready.set()
    while True:
        bm.restore_from_backup("state/last_rebalance.json", random.choice(stamps))


def host_save_loop(folder, ready):
    import dalio_lite

    bot = dalio_lite.DalioLite(os.path.join(folder, "config.yaml"))
    ready.set()
    i = 0
    while True:
        i += 1
        bot.save_state("paper_account.json", {"cash": float(i), "positions": {"VTI": i}})


def kill_at_random(target, folder, seed):
    ready = FORK.Event()
    child = FORK.Process(target=target, args=(str(folder), ready), daemon=True)
    child.start()
    assert ready.wait(20), "child did not start"
    time.sleep(random.Random(seed).uniform(0.0, 0.03))
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    return child.exitcode == -signal.SIGKILL


def assert_consistent(folder, state_name="last_rebalance.json", stem="last_rebalance"):
    state = folder / "state" / state_name
    if state.exists():
        validate_content(state_name, state.read_bytes())  # never torn
    bm = BackupManager(folder / "backups", keep_last=50)
    store = bm.store
    names, _ = store.scan()
    for name in names:
        assert not name.startswith(".") or name in (".lock", ".writer") or ".tmp-" in name
    listed = bm.list_backups(state)
    assert all(".tmp-" not in b.name for b in listed)
    verified = 0
    for info in listed:
        if info.complete:
            fetch_verified(store, info.name)  # raises on any damage
            verified += 1
    return verified


def start_project(tmp_path, backups=3):
    folder = tmp_path / "p"
    (folder / "state").mkdir(parents=True)
    bm = BackupManager(folder / "backups", keep_last=50)
    for i in range(backups):
        (folder / "state" / "last_rebalance.json").write_bytes(rebalance_doc(n=f"seed{i}"))
        bm.backup_state_file(folder / "state" / "last_rebalance.json")
    return folder


def test_sigkill_during_backups(tmp_path, report):
    folder = start_project(tmp_path)
    kills = scaled(100)
    for i in range(kills):
        assert kill_at_random(backup_loop, folder, i)
        assert assert_consistent(folder) >= 1
        probe = folder / "probe" / "last_rebalance.json"
        assert BackupManager(folder / "backups").restore_from_backup(probe)
        shutil.rmtree(probe.parent)
    report(f"{kills} SIGKILLs during backup: 0 torn state files, every sidecar'd backup "
           "verified, restore succeeded after each")


def test_sigkill_during_restores_with_a_polling_reader(tmp_path, report):
    folder = start_project(tmp_path, backups=8)
    state = folder / "state" / "last_rebalance.json"
    bad_reads, reads = [], [0]
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            try:
                data = state.read_bytes()
            except FileNotFoundError:
                continue
            reads[0] += 1
            try:
                json.loads(data)
            except ValueError:
                bad_reads.append(data)

    poller = threading.Thread(target=reader, daemon=True)
    poller.start()
    kills = scaled(100)
    try:
        for i in range(kills):
            assert kill_at_random(restore_loop, folder, i)
            assert_consistent(folder)
    finally:
        stop.set()
        poller.join()
    assert bad_reads == []
    assert BackupManager(folder / "backups").restore_from_backup(state)
    report(f"{kills} SIGKILLs during restore, {reads[0]} concurrent reads: "
           f"{len(bad_reads)} invalid JSON seen")


def test_sigkill_during_dalio_state_saves(tmp_path, report):
    folder = tmp_path / "bot"
    folder.mkdir()
    shutil.copy(ROOT / "config.yaml", folder / "config.yaml")
    kills = scaled(60)
    for i in range(kills):
        assert kill_at_random(host_save_loop, folder, i)
        if (folder / "state" / "paper_account.json").exists():
            assert_consistent(folder, "paper_account.json", "paper_account")
    bm = BackupManager(folder / "backups")
    (folder / "state" / "paper_account.json").unlink(missing_ok=True)
    assert bm.restore_from_backup(folder / "state" / "paper_account.json")
    report(f"{kills} SIGKILLs during DalioLite state saves: state and backups consistent")


def test_killed_writers_leave_nothing_after_the_grace_period(tmp_path):
    folder = start_project(tmp_path)
    for i in range(scaled(20)):
        kill_at_random(backup_loop, folder, 1000 + i)
    later = datetime.now(UTC) + timedelta(hours=2)
    stale = later.timestamp() - 7200
    for entry in os.scandir(folder / "backups"):
        if entry.is_file():
            os.utime(entry.path, (stale, stale))
    bm = BackupManager(folder / "backups", keep_last=5, keep_daily=0, clock=lambda: later)
    bm.prune()
    assert [e.name for e in os.scandir(folder / "backups") if ".tmp-" in e.name] == []
    assert bm.verify().ok
