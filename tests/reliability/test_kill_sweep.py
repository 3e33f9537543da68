"""Kill sweeps (promises 11 and 12): SIGKILL a real DalioLite run at every durable step
it takes (each fsync, rename, replace and link, counted in call order by a fault hook
loaded into the process), then run again without the hook. A refusing run killed
anywhere leaves the next run facing the same doubt; a normal run killed anywhere in its
catch-up or its commit never loses a committed restore point and never leaves a state
the next run trades on wrongly."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from backup_manager import BackupManager
from backup_manager.points import point_name, points_in, read_point
from tests.helpers import ROOT, refusal_of

STATE_FILES = ("last_rebalance.json", "paper_account.json", "autopilot_status.json")
TIMEOUT = 120
STEPS = ("fsync", "rename", "replace", "link")

KILL_HOOK = f'''
import os, signal
_at = int(os.environ.get("DALIO_KILL_AT", "0"))
_done = [0]


def _killing(real):
    def step(*args, **kwargs):
        _done[0] += 1
        if _done[0] == _at:  # killed right before this step happens
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return step


if _at:
    for _name in {STEPS!r}:
        setattr(os, _name, _killing(getattr(os, _name)))
'''


@pytest.fixture
def hook(tmp_path):
    folder = tmp_path / "hook"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(KILL_HOOK)
    return folder


@pytest.fixture
def home(tmp_path):
    folder = tmp_path / "bot"
    folder.mkdir()
    shutil.copy(ROOT / "config.yaml", folder / "config.yaml")
    return folder


def run(home, hook=None, kill_at=0, *args):
    path = f"{hook}{os.pathsep}{ROOT}" if hook else str(ROOT)
    env = {**os.environ, "PYTHONPATH": path, "DALIO_KILL_AT": str(kill_at)}
    return subprocess.run([sys.executable, str(ROOT / "dalio_lite.py"), "--config",
                           str(home / "config.yaml"), *args], cwd=home.parent,
                          capture_output=True, text=True, env=env, timeout=TIMEOUT)


def orders_in(proc):
    return [line for line in proc.stderr.splitlines() if "order:" in line]


def state(home, name="last_rebalance.json"):
    return home / "state" / name


def committed_points(home):
    """Every restore point whose sidecar is in backups/, with its manifest's digest."""
    folder = home / "backups"
    numbers, _ = points_in(os.listdir(folder))
    store = BackupManager(folder).store
    return {n: read_point(store, n).digest for n in numbers}


def settled(home):
    """What a run that wrote nothing leaves: state files, backups, points (temp files
    and the record of a refusal aside)."""
    found = {}
    for folder in (home / "state", home / "backups"):
        for p in sorted(folder.rglob("*")):
            if p.is_file() and ".tmp-" not in p.name and p.name not in (
                    ".recovery.json", "dalio_lite.lock", ".lock"):
                found[str(p)] = p.read_bytes()
    return found


def sweep(home, hook, check):
    """Kill the run before each of its steps in turn, until one runs to its end;
    `check(killed_run)` after each kill. Returns how many kills there were."""
    kills = 0
    for step in range(1, 500):
        killed = run(home, hook, step)
        if killed.returncode != -signal.SIGKILL:
            return kills, killed
        kills += 1
        check(killed)
    raise AssertionError("the run never ran to its end")


def test_a_refusing_run_killed_at_any_step_leaves_the_same_doubt(home, hook):
    assert run(home).returncode == 0
    later = {"timestamp": datetime.now(UTC).isoformat()}
    state(home).write_text(json.dumps(later))
    assert run(home).returncode == 0  # a newer rebalance, in a point of its own
    newest = BackupManager(home / "backups").list_backups(state(home))[0].path
    newest.write_bytes(newest.read_bytes()[:-3])  # bit rot in the newest
    state(home).unlink()
    before = settled(home)
    reference = run(home)
    assert reference.returncode == 3
    doubt = refusal_of(reference.stderr)[0]

    def check(_killed):
        assert settled(home) == before, "a killed refusing run changed something"
        again = run(home)
        assert again.returncode == 3 and orders_in(again) == []
        assert refusal_of(again.stderr)[0] == doubt, "the next run faced another doubt"
        assert not state(home).exists(), "a fall-back was left installed"

    kills, last = sweep(home, hook, check)
    assert last.returncode == 3 and orders_in(last) == []
    assert kills >= 3, f"the sweep reached only {kills} steps: the hook is not working"
    assert settled(home) == before


def test_a_run_killed_at_any_step_of_its_catch_up_and_commit_loses_no_point(home, hook):
    config = home / "config.yaml"  # retention keeps every point: only a kill could lose one
    config.write_text(config.read_text().replace("keep_last: 10", "keep_last: 1000"))
    assert run(home).returncode == 0
    kills = 0
    for step in range(1, 500):
        account = json.loads(state(home, "paper_account.json").read_text())
        account["cash"] = round(account["cash"] + 1.0, 2)  # changed outside DalioLite:
        state(home, "paper_account.json").write_text(json.dumps(account))  # a catch-up
        before = committed_points(home)
        killed = run(home, hook, step)
        if killed.returncode != -signal.SIGKILL:
            assert killed.returncode == 0, killed.stderr
            break
        kills += 1
        after = committed_points(home)
        assert {n: d for n, d in after.items() if n in before} == before, \
            "a committed restore point was lost or changed by a kill"
        again = run(home)
        assert again.returncode == 0, again.stderr
        assert orders_in(again) == [], "the run after a kill traded"
        bm = BackupManager.from_config(home / "config.yaml")
        newest = bm.history().newest()
        for name in STATE_FILES:  # the newest point holds the live files again
            live = state(home, name).read_bytes()
            assert bm.entry_data(newest, name) == live, f"{name} drifted from the history"
        assert bm.verify().ok
    else:
        raise AssertionError("the run never ran to its end")
    assert kills >= 10, f"the sweep reached only {kills} steps: the hook is not working"
    print(f"[reliability] {kills} kills in a run's catch-up and commit")
    names = sorted(os.listdir(home / "backups"))
    numbers, incomplete = points_in(names)
    assert point_name(max(numbers)) in names
