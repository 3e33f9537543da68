"""Promises 1 and 2, as the kernel sees them: when backup_state_file or restore returns,
the new bytes were synced under their temp name, renamed (or linked) into place, and
then the folder holding the new name was synced. Every durable sync is recorded with
the path of its descriptor (a file or a folder), every rename or link with its
destination, and each is passed on to the real call.

A durable sync is fsync on Linux and fcntl(F_FULLFSYNC) where fcntl has it (macOS).
The tests run as this Linux is ("linux": its fcntl has no F_FULLFSYNC) and through a
stand-in fcntl module that has it, as macOS's does ("macos")."""

from __future__ import annotations

import errno
import fcntl
import importlib.util
import os
import types
from datetime import UTC, datetime

import pytest
import yaml

from backup_manager import BackupManager, StorageError, atomic
from backup_manager.writer import writer_id
from dalio_lite import DalioLite
from tests.helpers import rebalance_doc

WHEN = datetime(2026, 2, 17, 10, 30, tzinfo=UTC)
REAL_FSYNC = os.fsync
F_FULLFSYNC = 51  # its number in macOS's <sys/fcntl.h>
REFUSALS = ["ENOTSUP", "EOPNOTSUPP", "EINVAL", "ENOTTY"]  # network and FUSE mounts


def path_of(fd):
    number = fd if isinstance(fd, int) else fd.fileno()
    return os.readlink(f"/proc/self/fd/{number}")


def fcntl_with_full_fsync(calls, refuse=lambda path: None):
    """fcntl as on macOS: the real module plus F_FULLFSYNC, recorded as ("sync", path)
    and done as a real fsync (the most this Linux offers), unless `refuse(path)` gives
    an errno: then it is refused as a network or FUSE mount refuses it, and recorded
    as ("refused", path)."""
    stand_in = types.ModuleType("fcntl")
    stand_in.__dict__.update(vars(fcntl))
    stand_in.F_FULLFSYNC = F_FULLFSYNC

    def call(fd, command, arg=0):
        if command != F_FULLFSYNC:
            return fcntl.fcntl(fd, command, arg)
        path = path_of(fd)
        refusal = refuse(path)
        if refusal is not None:
            calls.append(("refused", path))
            raise OSError(refusal, os.strerror(refusal))
        calls.append(("sync", path))
        REAL_FSYNC(fd)
        return 0

    stand_in.fcntl = call
    return stand_in


def record_disk_calls(monkeypatch, platform, *, refuse=lambda path: None,
                      fsync_fails=lambda path: None):
    """[(op, path)] in call order: ("sync", path of the fd) for the platform's durable
    sync, ("sync", path) for an fsync on "macos" (a fall-back, or a sync that skipped
    F_FULLFSYNC), and ("name", destination) for os.replace, os.rename and os.link.
    `fsync_fails(path)` gives an errno for an fsync the filesystem cannot do."""
    calls = []

    def fsync(fd):
        path = path_of(fd)
        calls.append(("sync" if platform == "linux" else "fsync", path))
        failure = fsync_fails(path)
        if failure is not None:
            raise OSError(failure, os.strerror(failure))
        return REAL_FSYNC(fd)

    def naming(real):
        def wrapper(src, dst, *args, **kwargs):
            result = real(src, dst, *args, **kwargs)
            calls.append(("name", os.path.realpath(dst)))
            return result
        return wrapper

    monkeypatch.setattr(os, "fsync", fsync)
    for name in ("replace", "rename", "link"):
        monkeypatch.setattr(os, name, naming(getattr(os, name)))
    if platform == "macos":
        monkeypatch.setattr(atomic, "fcntl", fcntl_with_full_fsync(calls, refuse))
    return calls


@pytest.fixture(params=["linux", "macos"])
def platform(request):
    if request.param == "linux":
        assert not hasattr(fcntl, "F_FULLFSYNC"), "these tests run on Linux"
    return request.param


@pytest.fixture
def disk_calls(monkeypatch, platform):
    return record_disk_calls(monkeypatch, platform)


def temp_of(final):
    """Temp names are "." + final name + ".tmp-" + token, in the final folder."""
    folder, name = os.path.split(os.path.realpath(final))
    prefix = f".{name}.tmp-"
    return lambda path: os.path.dirname(path) == folder and \
        os.path.basename(path).startswith(prefix)


def same_path(want):
    real = os.path.realpath(want)
    return lambda path: path == real


def in_order(calls, *steps):
    """Each step (op, path or predicate) found after the previous one; fails showing
    every call."""
    at = -1
    for op, want in steps:
        match = want if callable(want) else same_path(want)
        at = next((i for i, (o, p) in enumerate(calls) if i > at and o == op and match(p)),
                  None)
        if at is None:
            shown = "\n  ".join(f"{o} {p}" for o, p in calls)
            pytest.fail(f"no {op} of {want} in the right place; calls:\n  {shown}")


def test_backup_syncs_its_bytes_then_its_sidecar_then_the_folder(state_file, project,
                                                                 disk_calls):
    bm = BackupManager(clock=lambda: WHEN)
    path = bm.backup_state_file(state_file)
    sidecar = path.with_name(path.name + ".sha256")
    in_order(disk_calls,
             ("sync", temp_of(path)), ("name", path),
             ("sync", temp_of(sidecar)), ("name", sidecar),
             ("sync", project / "backups"))
    assert path.read_bytes() == state_file.read_bytes()


def test_restore_syncs_the_state_file_then_the_state_folder(state_file, project,
                                                            disk_calls):
    bm = BackupManager()
    original = state_file.read_bytes()
    bm.backup_state_file(state_file)
    state_file.unlink()
    disk_calls.clear()
    bm.restore(state_file)
    in_order(disk_calls,
             ("sync", temp_of(state_file)), ("name", state_file),
             ("sync", project / "state"))
    assert state_file.read_bytes() == original


def test_restore_makes_the_replaced_file_durable_before_replacing_it(state_file, project,
                                                                     disk_calls):
    bm = BackupManager()
    bm.backup_state_file(state_file)
    replaced = rebalance_doc(n="valid, never backed up")
    state_file.write_bytes(replaced)
    disk_calls.clear()
    result = bm.restore(state_file)
    kept = project / "backups" / result.kept_as
    kept_sidecar = kept.with_name(kept.name + ".sha256")
    assert kept.parent == project / "backups" / "replaced"
    in_order(disk_calls,
             ("sync", project / "backups"),  # the new replaced/ folder's own name
             ("sync", temp_of(kept)), ("name", kept),
             ("sync", temp_of(kept_sidecar)), ("name", kept_sidecar),
             ("sync", kept.parent),
             ("sync", temp_of(state_file)), ("name", state_file),
             ("sync", project / "state"))
    assert kept.read_bytes() == replaced


def test_durable_false_skips_every_sync(state_file, disk_calls):
    bm = BackupManager(durable=False)
    bm.backup_state_file(state_file)
    state_file.unlink()
    assert bm.restore_from_backup(state_file)
    assert [p for op, p in disk_calls if op != "name"] == [], \
        "durable: false is the user's choice of speed over durability"


def test_a_backup_syncs_its_bytes_its_sidecar_its_point_and_its_folder_once_each(
        state_file, project, disk_calls):
    bm = BackupManager(clock=lambda: WHEN)
    bm.backup_state_file(state_file)  # the first backup also makes backups/ and syncs it
    state_file.write_bytes(rebalance_doc(n="next"))
    disk_calls.clear()
    path = bm.backup_state_file(state_file)
    sidecar = path.with_name(path.name + ".sha256")
    point = project / "backups" / "point-0000000002.json"
    assert [op for op, _ in disk_calls] == ["sync", "name"] * 4 + ["sync"], \
        "five syncs per backup and its point, no more (no fsync besides F_FULLFSYNC)"
    # The backup is committed before the point that names it; one folder sync, last,
    # makes every new name durable.
    in_order(disk_calls,
             ("sync", temp_of(path)), ("name", path),
             ("sync", temp_of(sidecar)), ("name", sidecar),
             ("sync", temp_of(point)), ("name", point),
             ("sync", temp_of(point.with_name(point.name + ".sha256"))),
             ("name", point.with_name(point.name + ".sha256")),
             ("sync", project / "backups"))


def test_a_backup_of_unchanged_bytes_makes_no_point_and_still_syncs_its_folder(
        state_file, project, disk_calls):
    bm = BackupManager(clock=lambda: WHEN)
    bm.backup_state_file(state_file)
    disk_calls.clear()
    path = bm.backup_state_file(state_file)
    assert not (project / "backups" / "point-0000000002.json").exists()
    assert [op for op, _ in disk_calls] == ["sync", "name", "sync", "name", "sync"]
    in_order(disk_calls, ("name", path.with_name(path.name + ".sha256")),
             ("sync", project / "backups"))


def configure_mirror(home):
    config = home / "config.yaml"
    doc = yaml.safe_load(config.read_text())
    doc["backup"]["mirror_dirs"] = ["mirror"]
    config.write_text(yaml.safe_dump(doc))
    (home / "mirror").mkdir()


def test_every_durable_write_of_a_daily_check_is_synced_the_platform_way(home, monkeypatch,
                                                                         platform):
    configure_mirror(home)
    calls = record_disk_calls(monkeypatch, platform)
    assert DalioLite(home / "config.yaml").run_daily_check().outcome == "rebalanced"
    writer_id(home / "backups")
    named = [path for op, path in calls if op == "name"]
    kinds = {"state file": "/state/", "backup": "/backups/last_rebalance_",
             "sidecar": ".json.sha256", "mirror copy": "/mirror/last_rebalance_",
             "outbox entry": "/backups/.outbox/", "writer id": "/backups/.writer"}
    for kind, part in kinds.items():
        assert any(part in path for path in named), f"no {kind} was written"
    for path in named:
        in_order(calls, ("sync", temp_of(path)), ("name", path),
                 ("sync", os.path.dirname(path)))
    assert [c for c in calls if c[0] not in ("sync", "name")] == [], \
        "every durable sync asks for F_FULLFSYNC where fcntl has it"


@pytest.mark.parametrize("refusal", REFUSALS)
def test_a_refused_full_fsync_falls_back_to_fsync(state_file, project, monkeypatch, refusal):
    calls = record_disk_calls(monkeypatch, "macos", refuse=lambda path: getattr(errno, refusal))
    path = BackupManager(mirror_dirs=[project / "mirror"]).backup_state_file(state_file)
    refused = [i for i, (op, _) in enumerate(calls) if op == "refused"]
    assert len(refused) >= 6, "bytes, sidecar and folder, in backups/ and in the mirror"
    assert [calls[i + 1] for i in refused] == [("fsync", calls[i][1]) for i in refused], \
        "each refusal is followed by an fsync of the same file or folder"
    assert [op for op, _ in calls if op == "sync"] == []
    assert (project / "mirror" / path.name).read_bytes() == state_file.read_bytes()
    assert BackupManager(mirror_dirs=[project / "mirror"]).verify().ok


def test_a_failing_full_fsync_fails_the_backup_and_leaves_nothing(state_file, project,
                                                                  monkeypatch):
    bm = BackupManager()
    bm.backup_state_file(state_file)
    before = sorted(os.listdir(project / "backups"))
    state_file.write_bytes(rebalance_doc(n="next"))
    record_disk_calls(monkeypatch, "macos", refuse=lambda path: errno.EIO)
    with pytest.raises(StorageError) as info:
        bm.backup_state_file(state_file)
    assert info.value.errno == errno.EIO
    assert sorted(os.listdir(project / "backups")) == before


def atomic_with_macos_errnos():
    """A fresh copy of backup_manager.atomic made with macOS's errno numbers, where
    ENOTSUP (45) and EOPNOTSUPP (102) differ; Linux has 95 for both."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(errno, "ENOTSUP", 45)
        mp.setattr(errno, "EOPNOTSUPP", 102)
        spec = importlib.util.spec_from_file_location("backup_manager.atomic_on_macos",
                                                      atomic.__file__)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("refusal", [45, 102, errno.EINVAL, errno.ENOTTY],
                         ids=["ENOTSUP", "EOPNOTSUPP", "EINVAL", "ENOTTY"])
def test_each_macos_refusal_falls_back_to_fsync(tmp_path, monkeypatch, refusal):
    on_macos = atomic_with_macos_errnos()
    calls = record_disk_calls(monkeypatch, "macos")
    monkeypatch.setattr(on_macos, "fcntl", fcntl_with_full_fsync(calls, lambda path: refusal))
    with open(tmp_path / "f", "wb") as f:
        on_macos.sync_to_disk(f.fileno())
    assert calls == [("refused", str(tmp_path / "f")), ("fsync", str(tmp_path / "f"))]


@pytest.mark.parametrize("refusal", REFUSALS)
def test_a_mirror_folder_that_cannot_be_synced_still_gets_every_backup(
        state_file, project, monkeypatch, platform, refusal):
    """FUSE and SMB mounts answer a folder's fsync with one of these: the copy is made."""
    mirror = project / "mirror"
    cannot = getattr(errno, refusal)
    record_disk_calls(monkeypatch, platform,
                      refuse=lambda path: cannot if os.path.isdir(path) else None,
                      fsync_fails=lambda path: cannot if path == str(mirror) else None)
    bm = BackupManager(mirror_dirs=[mirror])
    path = bm.backup_state_file(state_file)
    assert (mirror / path.name).read_bytes() == state_file.read_bytes()
    assert bm.status()["targets"][0]["pending"] == 0, "nothing left owed to the mirror"
    assert BackupManager(mirror_dirs=[mirror]).verify().ok


@pytest.mark.parametrize("what,failure", [("file", errno.EINVAL), ("folder", errno.EIO)])
def test_a_sync_that_fails_otherwise_fails_the_backup(state_file, project, monkeypatch,
                                                      platform, what, failure):
    """Only a folder's sync may be impossible; a file's, or an I/O error, is a failure."""
    bm = BackupManager()
    bm.backup_state_file(state_file)
    before = sorted(os.listdir(project / "backups"))
    state_file.write_bytes(rebalance_doc(n="next"))
    hit = (lambda path: os.path.isfile(path)) if what == "file" else os.path.isdir
    record_disk_calls(monkeypatch, platform,
                      refuse=lambda path: failure if hit(path) else None,
                      fsync_fails=lambda path: failure if hit(path) else None)
    with pytest.raises(StorageError) as info:
        bm.backup_state_file(state_file)
    assert info.value.errno == failure
    assert sorted(os.listdir(project / "backups")) == before
