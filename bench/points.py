"""Restore points: the backup path with its point against the tree before points, at 0
and 10,000 existing backups, in one run; and start-up recovery of a lost machine from
S3 (three state files, one point), timed.

Each tree backs up in a worker process of its own (a fresh BackupManager per call, as
a cron run has; the state changes before every call, so the newer tree commits a point
each time). A second worker of the older tree measures the run-to-run noise. Samples
are interleaved in a shuffled order, each after an `os.sync()`; the worker times the
call itself.

    python bench/points.py [--runs N] [--before REV]
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

from common import ROOT, Stats, fill_backups, machine, print_table, ratio

# The last commit of main before restore points ("One history").
BEFORE = "684ec66"
GENEROUS = "keep_last=36_500, keep_daily=36_500, retention_days=36_500"

WORKER = f"""
import json, logging, sys, time
logging.disable(logging.CRITICAL)
import backup_manager
from backup_manager import BackupManager
print(backup_manager.__file__, flush=True)
state, folder = sys.argv[1], sys.argv[2]
for n, _ in enumerate(sys.stdin):
    with open(state, "w") as f:  # new bytes each time: a change of state to commit
        json.dump({{"timestamp": "2026-12-05T15:45:00+00:00", "n": n, "pad": "x" * 900}}, f)
    start = time.perf_counter()
    BackupManager(folder, {GENEROUS}).backup_state_file(state)
    print(time.perf_counter() - start, flush=True)
"""


def checkout(rev: str, into: Path) -> Path:
    into.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


class Worker:
    """A process that imports one tree's package and backs up its own state file into
    `folder` once per request, answering the seconds the call took."""

    def __init__(self, code: Path, state: Path, folder: Path, existing: int):
        self.folder, self.existing = folder, existing
        self.reset()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(state), str(folder)],
            env={**os.environ, "PYTHONPATH": str(code)}, cwd=code,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        package = Path(self.proc.stdout.readline().strip())
        if not package.is_relative_to(code):
            raise SystemExit(f"the worker for {code} imported {package}")

    def reset(self) -> None:
        """An emptied folder; a full one is filled once and only grows by the runs."""
        if self.existing == 0:
            # Emptied of backups and points; the writer id and the lock file stay, as
            # they do on a machine that has run once.
            for entry in self.folder.iterdir() if self.folder.exists() else ():
                if entry.name not in (".writer", ".lock"):
                    entry.unlink() if entry.is_file() else shutil.rmtree(entry)
            self.folder.mkdir(exist_ok=True)
        elif not self.folder.exists():
            self.folder.mkdir()
            fill_backups(self.folder, "s", self.existing)

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


def files_floor(folder: Path, count: int):
    """What `count` durable new files cost at least: each written to a temp file, synced,
    renamed into place; then one folder sync. A backup is two (its bytes, its sidecar);
    a backup with its restore point is four."""
    folder.mkdir()
    done = [0]

    def write() -> None:
        done[0] += 1
        for i in range(count):
            tmp = folder / f".t{i}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, b"x" * 900)
            os.fsync(fd)
            os.close(fd)
            os.rename(tmp, folder / f"f{done[0]}-{i}")
        fd = os.open(folder, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)

    return write


def bench_floor(work: Path, runs: int) -> list[list[object]]:
    floors = {count: files_floor(work / f"floor-{count}", count) for count in (2, 4)}
    samples: dict[int, list[float]] = {2: [], 4: []}
    for round_ in range(runs):
        for count in random.Random(round_).sample([2, 4], 2):
            os.sync()
            start = time.perf_counter()
            floors[count]()
            samples[count].append(time.perf_counter() - start)
    stats = {count: Stats(values) for count, values in samples.items()}
    return [["floor: 2 durable files (a backup: its bytes, its sidecar)", stats[2].cell(),
             "1.00x"],
            ["floor: 4 durable files (a backup and its restore point)", stats[4].cell(),
             ratio(stats[4], stats[2])]]


def bench_backups(work: Path, before: Path, runs: int) -> list[list[object]]:
    rows = []
    for existing in (0, 10_000):
        trees = {"before": before, "before, a second process": before, "now": ROOT}
        workers = {label: Worker(code, work / f"s-{i}-{existing}.json",
                                 work / f"backups-{i}-{existing}", existing)
                   for i, (label, code) in enumerate(trees.items())}
        samples: dict[str, list[float]] = {label: [] for label in workers}
        order = list(workers)
        warmup = 5
        try:
            for round_ in range(warmup + runs):
                random.Random(round_).shuffle(order)
                for label in order:
                    workers[label].reset()
                    os.sync()
                    took = workers[label].backup()
                    if round_ >= warmup:
                        samples[label].append(took)
        finally:
            for worker in workers.values():
                worker.close()
        stats = {label: Stats(values) for label, values in samples.items()}
        rows += [[f"backup, {existing:,} existing: {label}", stats[label].cell(),
                  ratio(stats[label], stats["before"])] for label in workers]
    return rows


def bench_lost_machine(work: Path, runs: int) -> list[list[object]]:
    """A machine that rebalanced and sent its history to S3 (moto on 127.0.0.1) is gone:
    a new one, with only config.yaml, recovers its three state files from the bucket."""
    import boto3
    import yaml
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket="bench")
        old = work / "old-machine"
        old.mkdir()
        doc = yaml.safe_load((ROOT / "config.yaml").read_text())
        doc["backup"].update(cloud_enabled=True, s3_bucket="bench", s3_endpoint_url=endpoint,
                             s3_region="us-east-1")
        (old / "config.yaml").write_text(yaml.safe_dump(doc))
        subprocess.run([sys.executable, str(ROOT / "dalio_lite.py"), "--config",
                        str(old / "config.yaml")], check=True, capture_output=True)
        samples = []
        for n in range(runs):
            new = work / f"new-machine-{n}"
            new.mkdir()
            shutil.copy(old / "config.yaml", new / "config.yaml")
            took = subprocess.run(
                [sys.executable, "-c", RECOVER, str(new / "config.yaml")], check=True,
                capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            samples.append(float(took.stdout))
    finally:
        server.stop()
    return [["start-up recovery of a lost machine from S3: 3 files, 1 point (in-process)",
             Stats(samples).cell(), ""]]


RECOVER = """
import logging, sys, time
logging.disable(logging.CRITICAL)
from backup_manager import BackupManager, recover
bm = BackupManager.from_config(sys.argv[1])
start = time.perf_counter()
report = recover(bm)
took = time.perf_counter() - start
assert len(report.restored) == 3, report
print(took)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--before", default=BEFORE)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dalio-bench-points-") as tmp:
        work = Path(tmp)
        before = checkout(args.before, work / "before")
        rows = bench_floor(work, args.runs) + bench_backups(work, before, args.runs)
        rows += bench_lost_machine(work, max(5, args.runs // 10))
    print_table(f"The backup path with restore points against the tree before them "
                f"({args.before}), ms (median [min-max] of {args.runs}); {machine()}",
                ["what", "measured", "vs before"], rows)


if __name__ == "__main__":
    main()
