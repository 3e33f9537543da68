"""Many processes on one backups folder: backups, prunes and restores at once."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import sys

from backup_manager import BackupManager, atomic_write, fetch_verified
from tests.helpers import ROOT, rebalance_doc, scaled

SPAWN = multiprocessing.get_context("spawn")


def backup_worker(folder, worker, count, out):
    os.chdir(folder)
    bm = BackupManager(keep_last=10, keep_daily=0)
    state = f"state/w{worker}/last_rebalance.json"
    os.makedirs(os.path.dirname(state), exist_ok=True)
    names = []
    for i in range(count):
        atomic_write(state, rebalance_doc(worker=worker, n=i))
        names.append(bm.backup_state_file(state).name)
    out.put(("backup", names))


def prune_worker(folder, count, out):
    os.chdir(folder)
    bm = BackupManager(keep_last=10, keep_daily=0)
    for _ in range(count):
        bm.prune()
    out.put(("prune", []))


def restore_worker(folder, count, out):
    os.chdir(folder)
    bm = BackupManager(keep_last=10, keep_daily=0)
    kept = []
    for i in range(count):
        target = f"restored/r{i % 3}/last_rebalance.json"
        result = bm.restore(target)
        if result.kept_as:
            kept.append(result.kept_as)
    out.put(("restore", kept))


def test_eight_writers_with_prunes_and_restores(tmp_path, report):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "last_rebalance.json").write_bytes(rebalance_doc(n="seed"))
    BackupManager(tmp_path / "backups").backup_state_file(tmp_path / "state" /
                                                          "last_rebalance.json")
    per_worker = scaled(100)
    out = SPAWN.Queue()
    procs = [SPAWN.Process(target=backup_worker, args=(str(tmp_path), w, per_worker, out))
             for w in range(8)]
    procs += [SPAWN.Process(target=prune_worker, args=(str(tmp_path), scaled(30), out))
              for _ in range(2)]
    procs += [SPAWN.Process(target=restore_worker, args=(str(tmp_path), scaled(30), out))
              for _ in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0] * len(procs), "no process raised"

    made = [n for kind, names in results if kind == "backup" for n in names]
    assert len(made) == 8 * per_worker
    assert len(set(made)) == len(made), "every backup got its own name"
    kept = [n for kind, names in results if kind == "restore" for n in names]
    assert all((tmp_path / "backups" / n).is_file() for n in kept), \
        "every file a restore replaced is kept (replaced/ is no backup: never pruned)"
    made.append(sorted(p.name for p in (tmp_path / "backups").glob("last_rebalance_*.json"))[0])

    bm = BackupManager(tmp_path / "backups", keep_last=10, keep_daily=0)
    left = [b for b in bm.list_backups("last_rebalance.json")]
    assert all(b.complete for b in left)
    for b in left:
        fetch_verified(bm.store, b.name)
    should_keep = sorted(set(made))[-10:]
    assert [b.name for b in left][:10] == sorted(should_keep, reverse=True), \
        "the ten newest backups, which retention keeps, all survived"
    assert bm.verify().ok
    report(f"8 processes x {per_worker} backups + 2 pruners + 2 restorers: "
           f"{len(set(made))} distinct backups, 0 errors, the 10 newest kept and verified")


def test_concurrent_daily_checks_rebalance_once(tmp_path, report):
    rounds = scaled(3)
    for r in range(rounds):
        home = tmp_path / f"bot{r}"
        home.mkdir()
        shutil.copy(ROOT / "config.yaml", home / "config.yaml")
        procs = [subprocess.Popen([sys.executable, str(ROOT / "dalio_lite.py"), "--config",
                                   str(home / "config.yaml")], stderr=subprocess.PIPE,
                                  text=True) for _ in range(3)]
        logs = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], logs
        assert sum("decision: rebalanced" in log for log in logs) == 1
    report(f"{rounds} rounds of 3 simultaneous daily checks: exactly one rebalance each")
