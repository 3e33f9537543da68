"""The backup figure before and after every durable sync went through one function
(`atomic.sync_to_disk`: F_FULLFSYNC where fcntl has it, as on macOS). On Linux,
whose fcntl has none, it must stay within the run-to-run noise.

Each tree backs up in a worker process of its own (a fresh BackupManager per call
into an emptied folder: latency.py's "backup, 0 existing"), and a second worker of
the older tree measures the noise: the ratio of two identical trees in one run.
Samples are interleaved in a shuffled order, each after an `os.sync()`; the worker
times the call itself, so the pipe is not measured.

    python bench/durable.py [--runs N] [--before REV]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    ROOT,
    STATE_1K,
    Stats,
    durable_write_floor,
    machine,
    print_table,
    ratio,
)

# The last commit before atomic.sync_to_disk (issue 28, item 1).
BEFORE = "77e8bc7"

WORKER = """
import logging, sys, time
logging.disable(logging.CRITICAL)
import backup_manager
from backup_manager import BackupManager
print(backup_manager.__file__, flush=True)
state, folder = sys.argv[1], sys.argv[2]
for _ in sys.stdin:
    start = time.perf_counter()
    BackupManager(folder).backup_state_file(state)
    print(time.perf_counter() - start, flush=True)
"""


def checkout(rev: str, into: Path) -> Path:
    into.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


class Worker:
    """A process that imports one tree's package and backs up `state` into `folder`
    once per request, answering the seconds the call took."""

    def __init__(self, code: Path, state: Path, folder: Path):
        self.folder = folder
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(state), str(folder)],
            env={**os.environ, "PYTHONPATH": str(code)}, cwd=code,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        package = Path(self.proc.stdout.readline().strip())
        if not package.is_relative_to(code):
            raise SystemExit(f"the worker for {code} imported {package}")

    def empty(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir()

    def backup(self) -> float:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise SystemExit(f"a worker died: exit {self.proc.wait()}")
        return float(answer)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--before", default=BEFORE)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dalio-bench-durable-") as tmp:
        work = Path(tmp)
        state = work / "s.json"
        state.write_bytes(STATE_1K)
        before = checkout(args.before, work / "before")
        workers = {"before": Worker(before, state, work / "backups-before"),
                   "before, a second process": Worker(before, state, work / "backups-before-2"),
                   "now": Worker(ROOT, state, work / "backups-now")}
        (work / "floor").mkdir()
        floor = durable_write_floor(work / "floor")
        samples: dict[str, list[float]] = {label: [] for label in [*workers, "floor"]}
        order = list(samples)
        warmup = 5
        try:
            for round_ in range(warmup + args.runs):
                random.Random(round_).shuffle(order)
                for label in order:
                    if label == "floor":
                        os.sync()
                        start = time.perf_counter()
                        floor()
                        took = time.perf_counter() - start
                    else:
                        workers[label].empty()
                        os.sync()
                        took = workers[label].backup()
                    if round_ >= warmup:
                        samples[label].append(took)
        finally:
            for worker in workers.values():
                worker.close()
    stats = {label: Stats(values) for label, values in samples.items()}
    base = stats["before"]
    rows = [["durable write floor, 1 KB", stats["floor"].cell(), ""]]
    rows += [[f"backup, 0 existing: {label}" + (f" ({args.before})" if label == "before" else ""),
              stats[label].cell(), ratio(stats[label], base)] for label in workers]
    print_table(f"Backup before and after atomic.sync_to_disk, ms (median [min-max] of "
                f"{args.runs}); {machine()}", ["what", "measured", "vs before"], rows)


if __name__ == "__main__":
    main()
