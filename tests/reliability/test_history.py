"""History (promise 10): a restore rewrites no history and loses nothing it replaces;
a committed backup is always owed to every copy target, even across SIGKILLs; each
mirror keeps its own newest backup."""

from __future__ import annotations

import errno
import hashlib
import logging
import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import yaml

from backup_manager import BackupManager, atomic_write
from tests.helpers import rebalance_doc, scaled
from tests.reliability.procs import cli

FORK = multiprocessing.get_context("fork")


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def sidecar_line(path: Path, content: bytes) -> str:
    return f"{hashlib.sha256(content).hexdigest()}  {path.name}\n"


def stamp_of(backup: Path) -> str:
    return backup.name[len("last_rebalance_"):-len(".json")]


def two_backups(project, state_file):
    """B1 (older) and B2 (newer); the live file holds B2's bytes."""
    bm = BackupManager(project / "backups")
    made = []
    for label in ("B1", "B2"):
        content = rebalance_doc(n=label)
        state_file.write_bytes(content)
        made.append((bm.backup_state_file(state_file), content))
    return bm, made[0], made[1]


# --- 6. a restore rewrites no history and loses nothing it replaces ----------------------


def test_restoring_an_older_backup_adds_none_and_restore_undoes_it(project, state_file):
    bm, (b1, v1), (_b2, v2) = two_backups(project, state_file)
    before = [b.name for b in bm.list_backups(state_file)]
    bm.restore(state_file, timestamp=stamp_of(b1))
    assert state_file.read_bytes() == v1
    after = [b.name for b in bm.list_backups(state_file)]
    assert after == before, f"the restore added backups: {sorted(set(after) - set(before))}"
    BackupManager(project / "backups").restore(state_file)
    assert state_file.read_bytes() == v2, "restore right after a restore did not undo it"


def test_valid_bytes_no_backup_holds_go_to_replaced_and_are_never_restored(project,
                                                                          state_file):
    bm, _b1, (_b2, v2) = two_backups(project, state_file)
    unsaved = rebalance_doc(n="valid, never backed up")
    state_file.write_bytes(unsaved)
    result = bm.restore(state_file)
    assert state_file.read_bytes() == v2
    assert result.kept_as and result.kept_as.startswith("replaced/"), \
        f"the replaced file was kept as {result.kept_as!r}, not under replaced/"
    kept = project / "backups" / result.kept_as
    assert kept.read_bytes() == unsaved
    assert sidecar(kept).read_text() == sidecar_line(kept, unsaved)
    state_file.unlink()
    BackupManager(project / "backups").restore(state_file)
    assert state_file.read_bytes() == v2, "automatic restore returned the replaced bytes"


def test_invalid_live_file_still_goes_to_corrupt(project, state_file):
    bm, _b1, (_b2, v2) = two_backups(project, state_file)
    state_file.write_bytes(b"{garbage")
    result = bm.restore(state_file)
    assert state_file.read_bytes() == v2
    assert result.kept_as and result.kept_as.startswith("corrupt/")
    assert (project / "backups" / result.kept_as).read_bytes() == b"{garbage"


# --- 7. a committed backup is always owed to every copy target --------------------------


def backup_loop(folder, mirror, ready):
    os.chdir(folder)
    logging.disable(logging.CRITICAL)  # every copy fails: the mirror is not mounted
    bm = BackupManager(keep_last=3, keep_daily=0, mirror_dirs=[mirror])
    ready.set()
    i = 0
    while True:
        i += 1
        atomic_write("state/last_rebalance.json", rebalance_doc(n=i, pid=os.getpid()))
        bm.backup_state_file("state/last_rebalance.json")


def complete_backups(folder: Path) -> list[str]:
    names = set(os.listdir(folder))
    return sorted(n for n in names if n.startswith("last_rebalance_") and n.endswith(".json")
                  and n + ".sha256" in names)


def owed_without_record(folder: Path, mirror: Path) -> list[str]:
    """Complete local backups with no outbox entry and no copy in the mirror."""
    outbox = folder / "backups" / ".outbox"
    entries = [e for t in (outbox.iterdir() if outbox.is_dir() else ()) if t.is_dir()
               for e in os.listdir(t)]
    in_mirror = set(os.listdir(mirror)) if mirror.is_dir() else set()
    return [n for n in complete_backups(folder / "backups")
            if n not in in_mirror and not any(e.startswith(n) for e in entries)]


def test_sigkill_never_leaves_a_backup_unowed_to_a_mirror(tmp_path, report):
    folder = tmp_path / "p"
    (folder / "state").mkdir(parents=True)
    mirror = tmp_path / "drive" / "dalio"  # the drive is not mounted: copies stay pending
    kills, unowed = scaled(40), []
    rng = random.Random(7)
    for _ in range(kills):
        ready = FORK.Event()
        child = FORK.Process(target=backup_loop, args=(str(folder), str(mirror), ready),
                             daemon=True)
        child.start()
        assert ready.wait(20), "child did not start"
        time.sleep(rng.uniform(0.0, 0.05))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        unowed += owed_without_record(folder, mirror)  # before the next run prunes them
    made = complete_backups(folder / "backups")
    report(f"{kills} SIGKILLs: {len(made)} complete backups, {len(set(unowed))} found "
           "complete with no outbox entry for the mirror")
    assert not unowed, f"{len(set(unowed))} committed backups owed to nobody, e.g. {unowed[0]}"
    (tmp_path / "drive").mkdir()
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump({"backup": {"mirror_dirs": [str(mirror)]}}))
    cli(folder, "--config", config, "sync")
    missing = [n for n in complete_backups(folder / "backups")
               if not (mirror / n).is_file() or not (mirror / (n + ".sha256")).is_file()]
    assert not missing, f"sync left {len(missing)} backups out of the mirror"


def test_pending_backup_that_cannot_be_read_is_logged_and_skipped(project, state_file,
                                                                 monkeypatch, caplog):
    mirror = project / "drive" / "dalio"
    state_file.write_bytes(rebalance_doc(n="B1"))
    b1 = BackupManager(project / "backups", mirror_dirs=[mirror]).backup_state_file(state_file)
    (project / "drive").mkdir()  # mounted again: B1 is owed
    real_open, unreadable = os.open, os.path.abspath(b1)

    def open_with_a_bad_sector(path, *args, **kwargs):
        if os.path.abspath(os.fsdecode(path)) == unreadable:
            raise OSError(errno.EIO, os.strerror(errno.EIO), os.fsdecode(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_with_a_bad_sector)
    bm = BackupManager(project / "backups", mirror_dirs=[mirror])
    made = []
    with caplog.at_level(logging.WARNING, logger="backup_manager"):
        for label in ("B2", "B3"):
            state_file.write_bytes(rebalance_doc(n=label))
            made.append(bm.backup_state_file(state_file))
    for backup in made:
        assert (mirror / backup.name).read_bytes() == backup.read_bytes(), \
            f"{backup.name} was not copied past the unreadable {b1.name}"
        assert sidecar(mirror / backup.name).is_file()
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(b1.name in m for m in logged), f"the unreadable backup was not logged: {logged}"
    monkeypatch.undo()
    bm.sync()
    assert (mirror / b1.name).read_bytes() == b1.read_bytes(), "B1 is no longer owed"


# --- 8. each mirror keeps its own newest -------------------------------------------------


def test_each_mirror_keeps_its_own_newest_backup(project, state_file):
    mirror = project / "mirror"
    with_mirror = BackupManager(project / "backups", mirror_dirs=[mirror], keep_last=50)
    local_only = BackupManager(project / "backups", keep_last=50)
    made = []
    for i in range(1, 13):
        content = rebalance_doc(n=f"B{i}")
        state_file.write_bytes(content)
        made.append(((with_mirror if i <= 3 else local_only).backup_state_file(state_file),
                     content))
    assert sorted(p.name for p in mirror.glob("last_rebalance_*.json")) == \
        [b.name for b, _ in made[:3]], "setup: the mirror got B1..B3 only"
    BackupManager(project / "backups", mirror_dirs=[mirror], keep_last=3, keep_daily=0).prune()
    b3, v3 = made[2]
    assert (mirror / b3.name).is_file(), "prune removed the mirror's newest backup (B3)"
    assert (mirror / b3.name).read_bytes() == v3
    assert sidecar(mirror / b3.name).read_text() == sidecar_line(b3, v3)
    assert all(b.exists() for b, _ in made[-3:])
