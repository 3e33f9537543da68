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


WHEN = datetime(2026, 2, 17, 10, 30, 0, 123456, tzinfo=UTC)
STAMP = "2026-02-17_10-30-00.123456Z"  # the timestamp part of the one backup's name
STAMP_CHARS = "0123456789-_.Z"
STAMPS = st.one_of(
    st.text(max_size=40),  # anything at all
    st.integers(0, len(STAMP)).map(lambda n: STAMP[:n]),  # every prefix of the stamp
    st.text(st.sampled_from(STAMP_CHARS), max_size=30),  # well-formed, mostly not a prefix
)


@EXAMPLES
@given(stamp=STAMPS)
def test_arbitrary_timestamps_are_refused_or_matched(stamp):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        state = root / "state" / "last_rebalance.json"
        state.parent.mkdir()
        content = rebalance_doc()
        state.write_bytes(content)
        bm = BackupManager(root / "backups", clock=lambda: WHEN)
        assert bm.backup_state_file(state).name == f"last_rebalance_{STAMP}.json"
        state.unlink()
        before = tree(root)
        try:
            result = bm.restore_from_backup(state, stamp)
        except ValueError:
            assert stamp == "" or set(stamp) - set(STAMP_CHARS), "a well-formed prefix is refused"
            assert tree(root) == before
            return
        assert stamp and not set(stamp) - set(STAMP_CHARS), "only digits - _ . Z are accepted"
        assert result is STAMP.startswith(stamp)
        if result:
            assert state.read_bytes() == content
            assert tree(root) == {**before, "state/last_rebalance.json": content}
        else:
            assert not state.exists(), "nothing restored for a prefix no backup has"
            assert tree(root) == before


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


def test_s3_names_never_escape(tmp_path, bucket):
    """Keys under the prefix that are no plain file name (nested, climbing, Windows
    separators, the folder marker) are never listed, restored or written."""
    import boto3

    endpoint, bucket_name = bucket
    project = tmp_path / "project"
    project.mkdir()
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    prefix = "dalio-lite-backups/"

    def put_backup(key_of, data, year):
        name = format_backup_name("last_rebalance", ".json", datetime(year, 1, 1, tzinfo=UTC))
        client.put_object(Bucket=bucket_name, Key=prefix + key_of(name), Body=data)
        client.put_object(Bucket=bucket_name, Key=prefix + key_of(name + ".sha256"),
                          Body=f"{sha256_hex(data)}  {name}\n".encode())
        return name

    good = rebalance_doc(n="good")
    good_name = put_backup(lambda n: n, good, 2026)
    evil = rebalance_doc(n="evil, newer")
    hostile = [lambda n: f"sub/{n}", lambda n: f"../{n}", lambda n: f"../../{n}",
               lambda n: f".{n}", lambda n: f"..\\{n}", lambda n: f"sub\\{n}"]
    for key_of in hostile:
        put_backup(key_of, evil, 2031)  # newer: chosen first if it were ever seen
    for odd in ("", "..", ".", ".hidden"):
        client.put_object(Bucket=bucket_name, Key=prefix + odd, Body=evil)
    assert len(client.list_objects_v2(Bucket=bucket_name)["Contents"]) == 2 + 2 * 6 + 4

    bm = BackupManager(project / "backups", cloud_enabled=True, s3_bucket=bucket_name,
                       s3_endpoint_url=endpoint, s3_region="us-east-1")
    # A hidden name is a plain name (a dot-file state's backups have them): listed,
    # but as another state file's backup, never as last_rebalance.json's.
    hidden = "." + format_backup_name("last_rebalance", ".json", datetime(2031, 1, 1, tzinfo=UTC))
    assert sorted(bm.cloud.list_names("")) == sorted(
        [good_name, good_name + ".sha256", hidden, hidden + ".sha256", ".hidden"])
    assert sorted(bm.cloud.list_names("last_rebalance_")) == [good_name, good_name + ".sha256"]
    around = sorted(os.listdir(tmp_path))
    state = project / "state" / "last_rebalance.json"
    result = bm.restore(state, source="cloud")
    assert (result.name, result.location) == (good_name, "s3")
    assert state.read_bytes() == good
    assert tree(project) == {"state/last_rebalance.json": good, f"backups/{good_name}": good,
                             "backups/.lock": b"",
                             f"backups/{good_name}.sha256": f"{sha256_hex(good)}  "
                                                            f"{good_name}\n".encode()}
    assert sorted(os.listdir(tmp_path)) == around, "nothing written beside the project"
    # The only problem verify sees is the planted hidden one, whose sidecar names
    # another backup: a bad backup of another state file, never of this one.
    assert {(p.name, p.status) for p in bm.verify(cloud=True).problems} == {
        (hidden, "malformed sidecar")}


def test_leading_dash_names_on_the_command_line(tmp_path):
    (tmp_path / "-odd [name].json").write_text('{"a": 1}')
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "backup_manager", "backup", "--",
                           "-odd [name].json"], cwd=tmp_path, capture_output=True, text=True,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    assert state_key("-odd [name].json") == ("-odd [name]", ".json")
    assert list((tmp_path / "backups").glob("-odd [[]name]_*.json"))
