"""Disk faults at every write step, a full and a read-only disk, a vanished state
folder, clock jumps, big state and unreadable sidecars."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from backup_manager import BackupManager, StorageError, UnseenStoresError, fetch_verified
from tests.helpers import ROOT, rebalance_doc, scaled, two_backups

FAULT_POINTS = ["write", "fsync", "replace", "link", "open"]


def snapshot_backups(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


class Injector:
    """Make the n-th call of one os function on files under `root` fail with `err`."""

    def __init__(self, monkeypatch, root, func, n, err):
        self.root, self.n, self.err, self.calls = str(root), n, err, 0
        self.real = getattr(os, func)
        self.func = func
        monkeypatch.setattr(os, func, self.wrapper)

    def _under_root(self, args):
        target = args[1] if self.func in ("replace", "link") else args[0]
        if isinstance(target, int):
            try:
                target = os.readlink(f"/proc/self/fd/{target}")
            except OSError:
                return False
        return os.path.abspath(os.fspath(target)).startswith(self.root)

    def wrapper(self, *args, **kwargs):
        if self._under_root(args):
            self.calls += 1
            if self.calls == self.n:
                raise OSError(self.err, os.strerror(self.err))
        return self.real(*args, **kwargs)


# Errors each call really returns on Linux (see write(2), fsync(2), open(2), rename(2),
# link(2)): a full disk or quota and I/O errors while writing; permissions are checked
# when a file is opened, never by write or fsync on an open descriptor.
REAL_FAULTS = {
    "write": [errno.ENOSPC, errno.EDQUOT, errno.EIO],
    "fsync": [errno.ENOSPC, errno.EDQUOT, errno.EIO],
    "replace": [errno.ENOSPC, errno.EDQUOT, errno.EROFS],
    "link": [errno.ENOSPC, errno.EDQUOT, errno.EIO],
    "open": [errno.EACCES, errno.ENOSPC, errno.EDQUOT],
}
assert sorted(REAL_FAULTS) == sorted(FAULT_POINTS)
FAULT_CASES = [(func, err) for func, errs in REAL_FAULTS.items() for err in errs]


@pytest.mark.parametrize("func,err", FAULT_CASES,
                         ids=[f"{func}-{errno.errorcode[err]}" for func, err in FAULT_CASES])
def test_fault_at_each_step_leaves_old_backups_and_nothing_half_written(project, state_file,
                                                                        func, err):
    bm = BackupManager()
    bm.backup_state_file(state_file)
    folder = project / "backups"
    before = snapshot_backups(folder)
    state_before = state_file.read_bytes()
    failures = 0
    for n in range(1, 40):
        state_file.write_bytes(rebalance_doc(n=n))
        state_before = state_file.read_bytes()
        before = snapshot_backups(folder)
        with pytest.MonkeyPatch.context() as mp:
            injector = Injector(mp, folder, func, n, err)
            try:
                bm.backup_state_file(state_file)
            except StorageError as exc:
                failures += 1
                assert exc.errno == err and os.strerror(err) in str(exc)
                assert snapshot_backups(folder) == before, "old backups intact, nothing added"
        assert state_file.read_bytes() == state_before
        leftovers = [p.name for p in folder.iterdir() if ".tmp-" in p.name]
        assert leftovers == []
        if injector.calls < n:
            break  # the n-th call never came: every step has been failed once
    assert BackupManager().verify().ok
    assert failures >= 1


@pytest.fixture
def tiny_disk(tmp_path):
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(folder):
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"x" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_real_full_disk(project, state_file, tiny_disk):
    bm = BackupManager(tiny_disk / "backups")
    bm.backup_state_file(state_file)
    before = snapshot_backups(tiny_disk / "backups")
    fill(tiny_disk)
    state_file.write_bytes(rebalance_doc(n="new"))
    with pytest.raises(StorageError) as info:
        bm.backup_state_file(state_file)
    assert info.value.errno == errno.ENOSPC
    assert snapshot_backups(tiny_disk / "backups") == before
    assert [p for p in (tiny_disk / "backups").iterdir() if ".tmp-" in p.name] == []
    state_file.unlink()
    assert bm.restore_from_backup(state_file), "restore works on a full backups disk"


def test_real_read_only_backups_folder(project, state_file, tiny_disk):
    bm = BackupManager(tiny_disk / "backups")
    bm.backup_state_file(state_file)
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_disk)], check=True)
    with pytest.raises(StorageError) as info:
        bm.backup_state_file(state_file)
    assert info.value.errno == errno.EROFS
    state_file.write_bytes(b"garbage")
    with pytest.raises(StorageError):
        bm.restore(state_file)  # the invalid file cannot be kept aside: nothing changes
    assert state_file.read_bytes() == b"garbage"


def test_dalio_run_on_read_only_backups_goes_on_and_records_but_places_no_order(
        tmp_path, tiny_disk):
    import json
    import sys

    import yaml

    home = tmp_path / "bot"
    home.mkdir()
    doc = yaml.safe_load((ROOT / "config.yaml").read_text())
    doc["backup"]["dir"] = str(tiny_disk / "backups")
    (home / "config.yaml").write_text(yaml.safe_dump(doc))
    (tiny_disk / "backups").mkdir()
    command = [sys.executable, str(ROOT / "dalio_lite.py"), "--config", str(home / "config.yaml")]
    assert subprocess.run(command, capture_output=True).returncode == 0  # rebalanced
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_disk)], check=True)
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Read-only" in done.stderr
    status = json.loads((home / "state" / "autopilot_status.json").read_text())
    assert status["outcome"] == "no_action", done.stderr
    assert "Read-only" in status["last_backup_error"]
    account = (home / "state" / "paper_account.json").read_bytes()
    config = home / "config.yaml"
    config.write_text(config.read_text().replace("VTI: 250.0", "VTI: 400.0"))  # drift
    forced = subprocess.run([*command, "--force-rebalance"], capture_output=True, text=True)
    assert forced.returncode == 3, forced.stderr
    assert "order:" not in forced.stderr, "orders without their intent committed"
    assert "the intent before orders could not be committed" in forced.stderr
    assert (home / "state" / "paper_account.json").read_bytes() == account


def test_state_folder_deleted_mid_run(project, state_file):
    bm = BackupManager()
    bm.backup_state_file(state_file)
    shutil.rmtree(project / "state")
    assert bm.backup_state_file(state_file) is None
    assert bm.restore_from_backup(state_file)
    assert state_file.exists()


def test_clock_jumps_forward_and_back(project, state_file):
    now = datetime.now(UTC)
    clock = [now]
    bm = BackupManager(clock=lambda: clock[0])
    made = []
    for jump in (timedelta(0), timedelta(days=31), timedelta(0), timedelta(days=-1),
                 timedelta(0)):
        clock[0] = now + jump
        for i in range(3):
            state_file.write_bytes(rebalance_doc(n=f"{jump}-{i}"))
            made.append(bm.backup_state_file(state_file))
        assert made[-1].exists(), "a backup is never pruned by the call that made it"
    assert [p.name for p in made] == sorted(p.name for p in made), "names keep creation order"
    left = {b.name for b in bm.list_backups(state_file)}
    assert len(left) >= 10
    problems = bm.verify().problems
    assert {p.status for p in problems} == {"stamped in the future"}
    # Made under the clock 31 days ahead; those made after it are only named after it.
    assert {p.name for p in problems} == {p.name for p in made[3:6]} & left
    last = state_file.read_bytes()
    state_file.unlink()
    assert bm.restore_from_backup(state_file)
    assert state_file.read_bytes() == last, "the last backup made, whatever its stamp"


def test_ten_megabyte_state_file(project):
    big = project / "state" / "history.json"
    payload = b'{"rows": ["' + os.urandom(5 * 1024 * 1024).hex().encode() + b'"]}'
    big.write_bytes(payload)
    bm = BackupManager()
    path = bm.backup_state_file(big)
    assert path.stat().st_size == len(payload)
    big.unlink()
    assert bm.restore_from_backup(big)
    assert big.read_bytes() == payload


def test_unreadable_sidecar_falls_back(project, state_file):
    bm, older, newest = two_backups(state_file)
    sidecar = str(newest) + ".sha256"
    real_open = os.open

    def refusing_open(path, *args, **kwargs):
        if os.fspath(path).endswith(os.path.basename(sidecar)):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_open(path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "open", refusing_open)
        # An object that cannot be read is a store that cannot be seen: it may hold the
        # newest state, so nothing is installed unless the operator says so.
        assert not bm.restore_from_backup(state_file)
        assert not state_file.exists()
        with pytest.raises(UnseenStoresError, match="Permission denied"):
            bm.restore(state_file)
        assert bm.restore(state_file, from_reachable=True).changed
    assert state_file.read_bytes() == older
    assert [i.status for i in BackupManager().verify().problems] == []


def test_sidecar_that_is_a_folder(project, state_file):
    bm, older, newest = two_backups(state_file)
    sidecar = newest.with_name(newest.name + ".sha256")
    sidecar.unlink()
    sidecar.mkdir()
    assert bm.restore_from_backup(state_file)
    assert state_file.read_bytes() == older


def test_many_faulty_runs_keep_every_good_backup(project, state_file):
    bm = BackupManager(keep_last=1000)
    good = []
    runs = scaled(40)
    for i in range(runs):
        state_file.write_bytes(rebalance_doc(n=i, id=str(uuid.uuid4())))
        with pytest.MonkeyPatch.context() as mp:
            Injector(mp, project / "backups", FAULT_POINTS[i % 4], 1 + i % 3, errno.ENOSPC)
            try:
                good.append(bm.backup_state_file(state_file))
            except StorageError:
                pass
    for path in good:
        fetch_verified(bm.store, path.name)
    assert {b.name for b in bm.list_backups(state_file)} == {p.name for p in good}
