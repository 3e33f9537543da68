"""The start-up guard through the public API: `recover(manager, state_files, *,
accept_fresh, evidence, command) -> RecoveryReport` restores what is missing or
invalid, refuses what existed and cannot be restored, and catches up backups and
copies (promises 8, 10, 11)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from backup_manager import (
    BackupManager,
    RecoveryReport,
    Refusal,
    StateUnrecoverableError,
    recover,
)
from tests.helpers import ROOT, rebalance_doc

STATE_NAMES = ("last_rebalance.json", "paper_account.json", "autopilot_status.json")


def contents(name: str, n: int) -> bytes:
    """Valid content for each of DalioLite's state files; `n` makes versions differ."""
    if name == "last_rebalance.json":
        return rebalance_doc(n=n)
    return json.dumps({"cash": 1000.0 + n, "positions": {}, "n": n}).encode()


def newest_backup_bytes(bm: BackupManager, path) -> bytes:
    newest = bm.list_backups(path)[0]
    assert newest.complete, f"the newest backup {newest.name} of {path} is incomplete"
    return newest.path.read_bytes()


def holders(bm: BackupManager, path) -> list[bytes]:
    return [b.path.read_bytes() for b in bm.list_backups(path) if b.complete]


@pytest.fixture
def paths(project):
    return [project / "state" / name for name in STATE_NAMES]


def cli(folder, *args):
    return subprocess.run([sys.executable, "-m", "backup_manager", *map(str, args)], cwd=folder,
                          capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


# --- restore, refuse, start over --------------------------------------------------------


def test_missing_file_with_a_valid_backup_is_restored(project, state_file):
    bm = BackupManager()
    made = bm.backup_state_file(state_file)
    original = state_file.read_bytes()
    state_file.unlink()
    report = recover(bm, [state_file])
    assert isinstance(report, RecoveryReport)
    assert report.restored == {state_file: made.name}
    assert state_file.read_bytes() == original
    assert report.first_run == [] and report.backups_problem is None and report.caught_up


def test_invalid_file_is_kept_under_corrupt_and_restored(project, state_file):
    bm = BackupManager()
    bm.backup_state_file(state_file)
    original = state_file.read_bytes()
    state_file.write_bytes(b"{\x00 torn")
    report = recover(bm, [state_file])
    assert state_file in report.restored
    assert state_file.read_bytes() == original
    kept = [p.read_bytes() for p in (project / "backups" / "corrupt").glob("last_rebalance_*")
            if not p.name.endswith(".sha256")]
    assert kept == [b"{\x00 torn"], "the invalid file was not kept under backups/corrupt/"


def test_nothing_anywhere_is_a_first_run(project):
    path = project / "state" / "last_rebalance.json"
    report = recover(BackupManager(), [path])
    assert report.first_run == [path]
    assert report.restored == {} and report.fresh == {}
    assert not path.exists(), "a first run must not invent a state file"


def test_valid_file_held_by_its_newest_backup_is_left_alone(project, state_file):
    bm = BackupManager()
    bm.backup_state_file(state_file)
    before = [b.name for b in bm.list_backups(state_file)]
    report = recover(bm, [state_file])
    assert report.kept == [state_file]
    assert report.backed_up == {} and report.queued == []
    assert [b.name for b in bm.list_backups(state_file)] == before


def test_evidence_mapping_refuses_and_names_the_commands(project):
    path = project / "state" / "last_rebalance.json"
    command = "python -m backup_manager --config /srv/bot/config.yaml"
    with pytest.raises(StateUnrecoverableError) as caught:
        recover(BackupManager(), [path], evidence={"last_rebalance.json": "the host traded"},
                command=command)
    message = str(caught.value)
    assert "refusing to trade" in message
    assert "the host traded" in message, "the evidence is not named"
    assert f"{command} verify" in message
    assert f"{command} restore" not in message, "nothing to restore: only what can work"
    assert "accept_fresh" in message or "--accept-fresh-state" in message
    assert not path.exists()


def test_evidence_by_path_refuses_too(project):
    path = project / "state" / "last_rebalance.json"
    with pytest.raises(StateUnrecoverableError, match="positions on record"):
        recover(BackupManager(), [path], evidence={path: "positions on record"})


def test_evidence_function_is_asked_only_about_lost_files(project, paths):
    bm = BackupManager()
    for n, path in enumerate(paths[:2]):
        path.write_bytes(contents(path.name, n))
        bm.backup_state_file(path)
    asked = []

    def evidence(path):
        asked.append(path.name)
        return None

    report = recover(bm, paths, evidence=evidence)
    assert asked == ["autopilot_status.json"]
    assert report.first_run == [paths[2]]


def test_damaged_backups_are_evidence(project, state_file):
    bm = BackupManager()
    made = bm.backup_state_file(state_file)
    made.write_bytes(made.read_bytes()[:-2])
    state_file.unlink()
    with pytest.raises(StateUnrecoverableError, match="no store holds those bytes intact"):
        recover(bm, [state_file])
    assert not state_file.exists()


def test_accept_fresh_starts_over_and_moves_damaged_backups_aside(project, state_file):
    bm = BackupManager()
    made = bm.backup_state_file(state_file)
    made.write_bytes(made.read_bytes()[:-2])
    state_file.unlink()
    report = recover(bm, [state_file], accept_fresh=True)
    assert state_file in report.fresh
    assert any(made.name in moved for moved in report.fresh[state_file])
    assert bm.list_backups(state_file) == []
    assert (project / "backups" / "corrupt" / made.name).exists(), "a fresh start deleted a backup"
    again = recover(bm, [state_file])
    assert again.first_run == [state_file], "the next start must not refuse again"


def test_accept_fresh_with_host_evidence_is_a_fresh_start(project):
    path = project / "state" / "last_rebalance.json"
    report = recover(BackupManager(), [path], accept_fresh=True,
                     evidence={"last_rebalance.json": "the host traded"})
    assert path in report.fresh
    assert not path.exists()


def test_accept_fresh_keeps_an_invalid_file_without_backups_under_corrupt(project):
    path = project / "state" / "last_rebalance.json"
    path.write_bytes(b"not json at all")
    with pytest.raises(StateUnrecoverableError, match="invalid"):
        recover(BackupManager(), [path])
    assert path.read_bytes() == b"not json at all", "a refusal changed the file"
    report = recover(BackupManager(), [path], accept_fresh=True)
    assert path in report.fresh and not path.exists()
    kept = [p.read_bytes() for p in (project / "backups" / "corrupt").glob("last_rebalance_*")
            if not p.name.endswith(".sha256")]
    assert kept == [b"not json at all"], "a fresh start deleted the invalid file"


def test_a_refusal_leaves_everything_as_it_found_it(project, paths):
    """Promise 11: a refusing run makes no backup and no point, installs nothing: the
    valid files it could keep are caught up by the first run that does not refuse."""
    bm = BackupManager()
    account, status, rebalance = paths[1], paths[2], paths[0]
    account.write_bytes(contents(account.name, 7))  # written during an outage
    status.write_bytes(contents(status.name, 1))
    with pytest.raises(StateUnrecoverableError):
        recover(bm, [account, status, rebalance],
                evidence={"last_rebalance.json": "the host traded"})
    backups = project / "backups"
    assert sorted(p.name for p in backups.iterdir()) == [".lock", ".recovery.json"], \
        "only the lock and the record of the refusal"
    record = json.loads((backups / ".recovery.json").read_text())
    assert record["refused"]["reasons"] == [
        [str(rebalance), "the host traded; no restore point records it"]] or \
        "the host traded" in record["refused"]["reasons"][0][1]
    report = recover(bm, [account, status, rebalance])
    for path in (account, status):
        assert path.read_bytes() in holders(bm, path)
        assert path in report.backed_up
    assert not (backups / ".recovery.json").exists(), "a run that does not refuse clears it"


# --- stores that cannot be used ---------------------------------------------------------


def test_backups_folder_that_is_a_file_is_reported_and_changes_nothing(project, state_file):
    (project / "backups").write_text("not a folder")
    before = state_file.read_bytes()
    report = recover(BackupManager(), [state_file])
    assert report.backups_problem, "backups/ is a file, yet no backups_problem"
    assert not report.caught_up
    assert state_file.read_bytes() == before
    assert (project / "backups").read_text() == "not a folder"


def test_backups_folder_that_is_a_file_is_evidence_for_a_lost_file(project):
    (project / "backups").write_text("not a folder")
    path = project / "state" / "last_rebalance.json"
    with pytest.raises(StateUnrecoverableError, match="backups cannot be seen"):
        recover(BackupManager(), [path])


@pytest.mark.parametrize("mirror", ["not mounted", "a file"])
def test_mirror_that_cannot_be_listed_is_evidence_for_a_lost_file(project, mirror):
    where = project / "drive" / "dalio" if mirror == "not mounted" else project / "mirror"
    if mirror == "a file":
        where.write_text("not a folder")
    path = project / "state" / "last_rebalance.json"
    with pytest.raises(StateUnrecoverableError, match=f"{where} cannot be seen"):
        recover(BackupManager(mirror_dirs=[where]), [path])
    assert not path.exists()


# --- catch-up ---------------------------------------------------------------------------


def test_catch_up_backs_up_a_live_file_no_backup_holds(project, paths):
    bm = BackupManager()
    for n, path in enumerate(paths):
        path.write_bytes(contents(path.name, n))
    report = recover(bm, paths)
    assert set(report.backed_up) == set(paths)
    assert report.caught_up
    for path in paths:
        assert newest_backup_bytes(bm, path) == path.read_bytes()


def test_catch_up_records_a_deliberate_restore_as_the_newest_backup(project, state_file):
    bm = BackupManager()
    older = rebalance_doc(n="older")
    state_file.write_bytes(older)
    first = bm.backup_state_file(state_file)
    state_file.write_bytes(rebalance_doc(n="newer"))
    bm.backup_state_file(state_file)
    stamp = first.name[len("last_rebalance_"):-len(".json")]
    done = cli(project, "restore", "state/last_rebalance.json", "--timestamp", stamp, "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert state_file.read_bytes() == older
    # Older than the newest restore point: a rollback, refused until acknowledged.
    with pytest.raises(Refusal) as refused:
        recover(bm, [state_file])
    assert refused.value.kind == "rollback"
    assert state_file.read_bytes() == older, "a refusal never rolls the file forward"
    report = recover(bm, [state_file], accept_rollback=True)
    assert state_file in report.backed_up, "the restored state was not recorded as newest"
    assert newest_backup_bytes(bm, state_file) == older
    assert state_file.read_bytes() == older, "recovery rolled the deliberate restore back"
    assert recover(bm, [state_file]).backed_up == {}, "caught up twice"


def test_catch_up_queues_and_sends_copies_a_mirror_lacks_listing_it_once(project, paths):
    plain = BackupManager()
    for n, path in enumerate(paths):
        path.write_bytes(contents(path.name, n))
        plain.backup_state_file(path)
    mirror = project / "mirror"
    mirror.mkdir()
    bm = BackupManager(mirror_dirs=[mirror])
    listings = []
    for store in bm.mirrors.values():
        real = store.list_names

        def counted(prefix="", _real=real):
            listings.append(prefix)
            return _real(prefix)

        store.list_names = counted
    report = recover(bm, paths)
    assert len(report.queued) == 4, "each file's newest backup and the newest point"
    assert len(listings) <= 1, f"the mirror was listed {len(listings)} times: {listings}"
    for path in paths:
        newest = bm.list_backups(path)[0]
        copy = mirror / newest.name
        assert copy.read_bytes() == newest.path.read_bytes()
        sidecar = (mirror / (newest.name + ".sha256")).read_text()
        assert sidecar.split()[0] == hashlib.sha256(copy.read_bytes()).hexdigest()
    listings.clear()
    assert recover(bm, paths).queued == [], "copies the mirror holds were queued again"
    assert len(listings) <= 1


def test_mirror_away_at_one_start_gets_its_copies_at_the_next(project, paths):
    plain = BackupManager()
    for n, path in enumerate(paths):
        path.write_bytes(contents(path.name, n))
        plain.backup_state_file(path)
    away = project / "drive" / "dalio"  # its parent is missing: not mounted
    report = recover(BackupManager(mirror_dirs=[away]), paths)
    assert report.kept == paths
    assert not away.exists(), "a mirror folder was made on a drive that is not mounted"
    (project / "drive").mkdir()
    bm = BackupManager(mirror_dirs=[away])
    report = recover(bm, paths)
    assert len(report.queued) == 4, "each file's newest backup and the newest point"
    for path in paths:
        newest = bm.list_backups(path)[0]
        assert (away / newest.name).read_bytes() == newest.path.read_bytes()


def test_recover_defaults_to_the_configured_state_files(project):
    (project / "config.yaml").write_text(
        "backup:\n  dir: backups\n  state_files: [state/last_rebalance.json]\n")
    path = project / "state" / "last_rebalance.json"
    path.write_bytes(rebalance_doc())
    bm = BackupManager.from_config(project / "config.yaml")
    bm.backup_state_file(path)
    original = path.read_bytes()
    path.unlink()
    report = recover(BackupManager.from_config(project / "config.yaml"))
    assert path in report.restored
    assert path.read_bytes() == original
