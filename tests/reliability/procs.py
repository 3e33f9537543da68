"""Real processes for the reliability suites: the command line, a process holding the
backups folder lock, and a wait for a process to open a given file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import ROOT

_HOLD_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.readline()
"""


def cli(folder, *args, env=None, faketime=None, timeout=120):
    """Run `python -m backup_manager ARGS` in `folder`; `faketime` is a list of faketime
    arguments (e.g. ["-f", "-1h"]) to run it under a shifted clock."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    command = [sys.executable, "-m", "backup_manager", *map(str, args)]
    if faketime is not None:
        command = ["faketime", *faketime, *command]
        # Shift the wall clock only: CLOCK_MONOTONIC an hour back goes below zero
        # on a machine up for less than an hour.
        full_env["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"
    return subprocess.run(command, cwd=folder, capture_output=True, text=True, env=full_env,
                          stdin=subprocess.DEVNULL, timeout=timeout)


def needs_faketime():
    if shutil.which("faketime") is None:
        pytest.skip("faketime is not installed (apt-get install faketime); CI installs it")


class LockHolder:
    """Another process holding an exclusive flock on a file until released."""

    def __init__(self, lock_path: Path):
        lock_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(lock_path)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.strip() == "locked", "the lock holder did not take the lock"

    def release(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
            self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            stream.close()


@contextmanager
def lock_held(lock_path: Path):
    """Yield a LockHolder that holds `lock_path` (backups/.lock) from another process."""
    holder = LockHolder(lock_path)
    try:
        yield holder
    finally:
        holder.close()


def wait_until_open(pid: int, path: Path, timeout: float = 20.0) -> bool:
    """True once process `pid` holds an open file descriptor on `path`."""
    target = os.path.realpath(path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except FileNotFoundError:
            return False  # the process is gone
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return True
            except OSError:
                continue
        time.sleep(0.005)
    return False
