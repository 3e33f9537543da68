"""Real processes for the reliability suites: the command line, a process holding the
backups folder lock, and a wait for a process to open a given file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
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


class Background:
    """A process started in the background whose stderr is read as it comes, so a test
    waits for what it logs (`wait_for`) and signals it at a known moment."""

    def __init__(self, command: list[str], *, cwd: Path, env: dict[str, str]):
        self.proc = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        self.pid = self.proc.pid
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def stderr(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def count(self, text: str) -> int:
        with self._changed:
            return sum(text in line for line in self.lines)

    def wait_for(self, text: str, times: int = 1, timeout: float = 60.0) -> None:
        """Until `times` lines hold `text`; fails naming what was logged instead."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while sum(text in line for line in self.lines) < times:
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"{times} line(s) with {text!r} never came "
                                         f"(exit {self.proc.poll()}):\n" + "\n".join(self.lines))
                self._changed.wait(min(left, 0.5))

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait(self, timeout: float) -> int:
        """The exit code, within `timeout` s (a process still running then is killed,
        and the test fails saying so)."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise AssertionError(f"still running {timeout:g} s later:\n{self.stderr}") from None
        self._reader.join(10)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(10)
        self.proc.stderr.close()
