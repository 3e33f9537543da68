"""`dalio_lite.py --every INTERVAL`: the forms it takes, the usage errors that name the
flag, the flags it refuses to repeat, and a config that cannot run stopping it at once.
What the loop does is in tests/reliability/test_loop.py (real processes, signals)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dalio_lite import Every
from tests.helpers import ROOT


def dalio(home, *args):
    return subprocess.run([sys.executable, str(ROOT / "dalio_lite.py"), "--config",
                           str(home / "config.yaml"), *args], cwd=home, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          stdin=subprocess.DEVNULL, timeout=60)


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("30m", 1800), ("24h", 86400),
                                          ("1d", 86400), ("7d", 604800), ("366d", 366 * 86400)])
def test_every_takes_a_number_and_a_unit(text, seconds):
    assert Every.parse(text) == Every(text, seconds)


@pytest.mark.parametrize("text", ["24", "0h", "0s", "1.5h", "24x", "h", "-1h", "24 h",
                                  "1h30m", "367d", "", "２４h"])
def test_a_bad_interval_is_a_usage_error_naming_the_flag(home, text):
    proc = dalio(home, f"--every={text}")
    assert proc.returncode == 2, proc.stderr
    assert "argument --every: takes a whole number and a unit" in proc.stderr
    assert repr(text) in proc.stderr
    assert not (home / "state").exists()


@pytest.mark.parametrize("flags", [["--force-rebalance"], ["--accept-fresh-state"],
                                   ["--accept-rollback"], ["--take-over"], ["--status"],
                                   ["--switch-broker"], ["--schedule", "cron"]])
def test_flags_for_one_run_are_not_repeated(home, flags):
    proc = dalio(home, "--every", "24h", *flags)
    assert proc.returncode == 2, proc.stderr
    assert f"--every repeats the plain daily check; {flags[0]} is for one run" in proc.stderr
    assert not (home / "state").exists()


def test_a_config_that_cannot_be_read_stops_the_loop_at_once(home):
    (home / "config.yaml").write_text("broker:\n  kind: robinhood\n")
    proc = dalio(home, "--every", "24h")
    assert proc.returncode == 1, proc.stderr
    assert "broker.kind must be paper or alpaca" in proc.stderr
    assert "nothing was run" in proc.stderr
