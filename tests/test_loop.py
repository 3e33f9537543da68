"""`dalio_lite.py --every INTERVAL`: the forms it takes, the usage errors that name the
flag, the flags it refuses to repeat, and a config that cannot run stopping it at once.
The checkout's Procfile runs it. What the loop does is in tests/reliability/test_loop.py
(real processes, signals)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys

import pytest

from dalio_lite import Every
from tests.helpers import ROOT, fresh_checkout
from tests.reliability.procs import Background
from tests.test_readme import marked


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


def test_the_procfile_is_the_one_docs_print_and_runs_the_loop_until_sigterm(tmp_path):
    """The checkout's Procfile, run as a platform runs it (its command, from the
    checkout, `python` the one with the dependencies), on a fresh copy of the checkout:
    the first daily check, then SIGTERM while it waits: exit 0."""
    procfile = (ROOT / "Procfile").read_text()
    assert marked("file", "Procfile") == procfile
    kind, line = procfile.strip().split(": ", 1)
    assert kind == "worker"
    app = fresh_checkout(tmp_path / "app")
    argv = shlex.split(line)
    assert argv[0] == "python"
    bot = Background([sys.executable, *argv[1:]], cwd=app,
                     env={**os.environ, "PYTHONPATH": str(app)})
    try:
        bot.wait_for("next daily check at")
        bot.signal(signal.SIGTERM)
        assert bot.wait(60) == 0, bot.stderr
    finally:
        bot.close()
    assert "done: rebalanced" in bot.stderr
    assert "every 24h" in bot.stderr
    assert (app / "state" / "last_rebalance.json").exists()
