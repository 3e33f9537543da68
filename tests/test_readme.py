"""README's recovery one-liners paste cleanly into a shell and restore byte-identically."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess

import pytest

from backup_manager import BackupManager
from tests.helpers import ROOT, rebalance_doc

README = (ROOT / "README.md").read_text()


def one_liner(marker):
    match = re.search(rf"<!-- one-liner: {marker} -->\n```bash\n(.*?)```", README, re.S)
    assert match, f"README lost its {marker} one-liner"
    return match.group(1)


def run_in_shell(script, folder):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(["bash", "-c", script], cwd=folder, capture_output=True, text=True,
                          env=env, timeout=60)


def test_restore_latest_one_liner(state_file, project):
    original = state_file.read_bytes()
    BackupManager().backup_state_file(state_file)
    state_file.unlink()
    proc = run_in_shell(one_liner("restore-latest"), project)
    assert proc.stdout.strip() == "Restore: SUCCESS", proc.stderr
    assert state_file.read_bytes() == original


def test_restore_specific_one_liner(project):
    name = "last_rebalance_2026-02-17_10-30-00.json"
    wanted = rebalance_doc(n="from the original module")
    (project / "backups").mkdir()
    (project / "backups" / name).write_bytes(wanted)
    (project / "backups" / (name + ".sha256")).write_text(
        f"{hashlib.sha256(wanted).hexdigest()}  {name}\n")
    (project / "state" / "last_rebalance.json").write_bytes(rebalance_doc(n="newer"))
    proc = run_in_shell(one_liner("restore-specific"), project)
    assert proc.stdout.strip() == "Restore: SUCCESS", proc.stderr
    assert (project / "state" / "last_rebalance.json").read_bytes() == wanted


def test_one_liner_reports_failure(project):
    proc = run_in_shell(one_liner("restore-latest"), project)
    assert proc.stdout.strip() == "Restore: FAILED"
    assert "no valid backup" in proc.stderr


@pytest.mark.parametrize("command", [
    "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/python dalio_lite.py",
    "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest",
])
def test_readme_keeps_its_two_commands(command):
    assert f"```bash\n{command}\n```" in README
    ci = (ROOT / ".ci" / "run").read_text()
    if "[test]" in command:
        assert "pip install --quiet -e '.[test]'" in ci and "-m pytest" in ci
