"""Health: verify (every backup in every store) and the status facts and problems."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

from backup_manager import BackupManager
from tests.helpers import flip_bit, rebalance_doc


def test_verify_names_each_problem(state_file, project):
    bm = BackupManager()
    paths = []
    for i in range(4):
        state_file.write_bytes(rebalance_doc(n=i))
        paths.append(bm.backup_state_file(state_file))
    flip_bit(paths[0])
    paths[1].with_name(paths[1].name + ".sha256").write_bytes(b"junk")
    paths[2].unlink()
    report = bm.verify()
    statuses = {i.name: i.status for i in report.items}
    assert statuses[paths[0].name] == "checksum mismatch"
    assert statuses[paths[1].name] == "malformed sidecar"
    assert statuses[paths[2].name + ".sha256"] == "orphan sidecar"
    assert statuses[paths[3].name] == "ok"
    assert not report.ok


def test_verify_flags_stale_incomplete_but_not_in_progress(state_file, project):
    bm = BackupManager()
    path = bm.backup_state_file(state_file)
    path.with_name(path.name + ".sha256").unlink()
    assert bm.verify().ok, "a fresh backup without sidecar may still be being written"
    old = time.time() - 7200
    os.utime(path, (old, old))
    bm.folder.clock = lambda: datetime.now(UTC) + timedelta(hours=2)
    assert [i.status for i in bm.verify().problems] == ["missing sidecar"]


def test_verify_covers_mirrors(project, state_file):
    mirror = project / "mirror"
    bm = BackupManager(mirror_dirs=[mirror])
    path = bm.backup_state_file(state_file)
    (mirror / path.name).write_bytes(b"{}")
    problems = bm.verify().problems
    assert [(p.location, p.status) for p in problems] == [(str(mirror), "checksum mismatch")]
