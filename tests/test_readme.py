"""README's recovery one-liners paste cleanly into a shell and restore byte-identically."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
import sys

import pytest

from backup_manager import BackupManager
from tests.helpers import ROOT, rebalance_doc

README = (ROOT / "README.md").read_text()


def one_liner(marker):
    match = re.search(rf"<!-- one-liner: {marker} -->\n```bash\n(.*?)```", README, re.S)
    assert match, f"README lost its {marker} one-liner"
    return match.group(1)


def run_in_shell(script, folder):
    """Run `script` as printed, in a project folder that has its virtual environment
    where Quick start makes it (.venv/bin/python: this test's interpreter)."""
    venv_python = folder / ".venv" / "bin" / "python"
    if not venv_python.exists():
        venv_python.parent.mkdir(parents=True)
        venv_python.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
        venv_python.chmod(0o755)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(["bash", "-c", script], cwd=folder, capture_output=True, text=True,
                          env=env, timeout=60)


@pytest.mark.parametrize("marker", ["restore-latest", "restore-specific"])
def test_one_liners_use_the_projects_python_and_say_where_to_run(marker):
    assert one_liner(marker).startswith(".venv/bin/python -c '\n")
    section = README[README.index("### Manual, from Python"):README.index(
        f"<!-- one-liner: {marker} -->")]
    assert "Run these from the project folder" in section


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


def test_readme_explains_every_problem_status_can_print():
    """Each rule of status_problems, made to fire, has its row in "When something is wrong"."""
    from backup_manager import status_problems

    section = README[README.index("## When something is wrong"):README.index("## File formats")]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    stale = {"path": "state/x.json", "state_file": "x.json", "live": "not backed up",
             "stamped_in_future": ["x_2099-01-01_00-00-00.000000Z.json"], "newest_valid": "n",
             "newest_valid_age_seconds": 7200.0}
    facts = {"backup_dir": "backups", "last_backup_error": "disk full",
             "state_files": [stale, {**stale, "live": "backed up", "stamped_in_future": [],
                                     "newest_valid": None}],
             "targets": [{"target": "s3://b/p", "pending": 2, "conflicts": 1,
                          "oldest_pending_age_seconds": 7200.0, "last_success": None,
                          "last_error": "x"}],
             "unconfigured_targets": [{"target": "s3", "pending": 3,
                                       "oldest_pending_age_seconds": 1.0}]}
    problems = status_problems(facts, max_age_hours=1) + status_problems(
        {**facts, "state_files": []})
    explained = set()
    for problem in problems:
        what = problem.split("; fix: ")[0]
        matching = [row for row in rows if _row_matches(row, what)]
        assert matching, f"README lacks: {what}"
        explained.update(matching)
    assert explained == set(rows), "every row is a PROBLEM status prints"


def _row_matches(row, problem):
    """A row's first cell, with its placeholders (X, N, TARGET, NAME, ...), matches."""
    pattern = row.split("`")[1]
    pattern = re.escape(pattern).replace(r"\.\.\.", ".*")
    for placeholder in ("state/X", "NAME", "TARGET", "X", "N", r"30\.0h", r"2\.0d"):
        pattern = pattern.replace(placeholder, ".+")
    return re.match(pattern, problem) is not None
