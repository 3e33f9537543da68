"""Hostile input: arbitrary state bytes, timestamps and file names, planted files of
other state files, symlinks and folders where files belong. A public call either
works or raises a documented error; nothing is written outside backups/ and the
target state path."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backup_manager import BackupManager, InvalidStateError, StorageError
from backup_manager.formats import format_backup_name, sha256_hex, state_key
from backup_manager.s3 import _plain_name
from tests.helpers import ROOT, SCALE, rebalance_doc

EXAMPLES = settings(max_examples=60 * SCALE, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and not p.is_symlink()}


def outside(root: Path, allowed: list[Path]) -> dict[str, bytes]:
    keep = [str(a.relative_to(root)) for a in allowed]
    return {k: v for k, v in tree(root).items() if not any(k == a or k.startswith(a + "/")
                                                           for a in keep)}


@EXAMPLES
@given(content=st.binary(max_size=2000), name=st.sampled_from(["x.json", "last_rebalance.json",
                                                                 "notes.txt"]))
def test_arbitrary_bytes_back_up_exactly_or_are_refused(content, name):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        state = root / "state" / name
        state.parent.mkdir()
        state.write_bytes(content)
        bm = BackupManager(root / "backups")
        before = outside(root, [root / "backups"])
        try:
            path = bm.backup_state_file(state)
        except InvalidStateError:
            assert name.endswith(".json")
            assert not any(root.glob("backups/*_*"))
            return
        assert path.read_bytes() == content
        state.unlink()
        assert bm.restore_from_backup(state)
        assert state.read_bytes() == content
        assert outside(root, [root / "backups", state]) == {
            k: v for k, v in before.items() if k != str(state.relative_to(root))}


@EXAMPLES
@given(stamp=st.text(max_size=40))
def test_arbitrary_timestamps_are_refused_or_matched(stamp):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        state = root / "state" / "last_rebalance.json"
        state.parent.mkdir()
        state.write_bytes(rebalance_doc())
        bm = BackupManager(root / "backups")
        bm.backup_state_file(state)
        before = tree(root)
        try:
            result = bm.restore_from_backup(state, stamp)
        except ValueError:
            assert tree(root) == before
            return
        assert isinstance(result, bool)
        assert set(tree(root)) <= set(before) | {"backups/.lock"}


NAME_CHARS = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\x00")


@EXAMPLES
@given(stem=st.text(NAME_CHARS, min_size=1, max_size=40),
       suffix=st.sampled_from([".json", ".txt", ""]))
def test_odd_file_names_round_trip(stem, suffix):
    name = stem + suffix
    if name in (".", "..") or name.endswith(".sha256") or len(name.encode()) > 180:
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        state = root / "state" / name
        state.parent.mkdir()
        content = b'{"ok": true}'
        try:
            state.write_bytes(content)
        except OSError:
            return
        bm = BackupManager(root / "backups")
        path = bm.backup_state_file(state)
        assert path.parent == root / "backups"
        assert [b.name for b in bm.list_backups(state)] == [path.name]
        state.unlink()
        assert bm.restore_from_backup(state)
        assert state.read_bytes() == content
        assert bm.verify(state).ok


@EXAMPLES
@given(stem=st.text(st.characters(whitelist_categories=("Ll", "Nd")), min_size=1, max_size=8),
       extra=st.text(st.characters(whitelist_categories=("Ll", "Nd", "Pc")), min_size=1,
                     max_size=8))
def test_other_stems_are_never_restored_or_pruned(stem, extra):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = root / "backups"
        folder.mkdir()
        other = f"{stem}_{extra}"
        planted = format_backup_name(other, ".json", datetime(2030, 1, 1, tzinfo=UTC))
        data = b'{"other": true}'
        (folder / planted).write_bytes(data)
        (folder / (planted + ".sha256")).write_text(f"{sha256_hex(data)}  {planted}\n")
        bm = BackupManager(folder, keep_last=0, keep_daily=0)
        state = root / f"{stem}.json"
        assert bm.restore_from_backup(state) is False
        bm.prune(state)
        assert (folder / planted).exists()


@pytest.mark.parametrize("make", ["folder", "dangling symlink", "fifo"])
def test_state_path_that_is_not_a_file(tmp_path, make):
    state = tmp_path / "state.json"
    if make == "folder":
        state.mkdir()
    elif make == "fifo":
        os.mkfifo(state)
    else:
        state.symlink_to(tmp_path / "nowhere")
    bm = BackupManager(tmp_path / "backups")
    if make == "dangling symlink":
        assert bm.backup_state_file(state) is None
    else:
        with pytest.raises(StorageError, match="not a regular file"):
            bm.backup_state_file(state)


def test_folders_and_symlinks_where_backups_belong(tmp_path):
    folder = tmp_path / "backups"
    folder.mkdir()
    state = tmp_path / "last_rebalance.json"
    state.write_bytes(rebalance_doc())
    bm = BackupManager(folder)
    good = bm.backup_state_file(state)
    planted = format_backup_name("last_rebalance", ".json",
                                 datetime(2031, 1, 1, tzinfo=UTC))
    (folder / planted).mkdir()
    (folder / (planted + ".sha256")).symlink_to(good.with_name(good.name + ".sha256"))
    state.unlink()
    assert bm.restore_from_backup(state)
    assert state.read_bytes() == good.read_bytes()
    assert bm.backup_state_file(state) is not None
    statuses = {i.status for i in bm.verify().problems}
    assert statuses == {"not a regular file"}


@EXAMPLES
@given(key=st.text(max_size=60))
def test_s3_names_never_escape(key):
    if _plain_name(key):
        assert "/" not in key and not key.startswith(".") and "\x00" not in key
        assert Path("backups", key).parent == Path("backups")


def test_leading_dash_names_on_the_command_line(tmp_path):
    (tmp_path / "-odd [name].json").write_text('{"a": 1}')
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "backup_manager", "backup", "--",
                           "-odd [name].json"], cwd=tmp_path, capture_output=True, text=True,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    assert state_key("-odd [name].json") == ("-odd [name]", ".json")
    assert list((tmp_path / "backups").glob("-odd [[]name]_*.json"))
