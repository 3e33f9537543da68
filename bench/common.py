"""Shared helpers for the benchmarks: timing, tables, the durable-write floor and
folders pre-filled with backups."""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backup_manager.atomic import sync_to_disk  # noqa: E402
from backup_manager.formats import format_backup_name  # noqa: E402

# Damaged backups and failed uploads are logged one line each: noise, not figures.
logging.disable(logging.CRITICAL)

STATE_1K = (b'{"timestamp": "2026-02-17T10:30:00+00:00", "note": "'
            + b"x" * 960 + b'"}')


class Stats:
    def __init__(self, samples_s: list[float]):
        self.samples = sorted(samples_s)
        self.median = statistics.median(self.samples) * 1000
        self.min = self.samples[0] * 1000
        self.max = self.samples[-1] * 1000

    def cell(self) -> str:
        return f"{self.median:8.3f} [{self.min:.3f}-{self.max:.3f}]"


def measure(fn: Callable[[], object], runs: int, setup: Callable[[], object] | None = None,
            warmup: int = 3) -> Stats:
    """Median/min/max of `runs` calls of fn, in ms; `setup` runs untimed before each."""
    for _ in range(warmup):
        if setup:
            setup()
        fn()
    samples = []
    for _ in range(runs):
        if setup:
            setup()
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return Stats(samples)


def measure_interleaved(cases: dict[object, tuple[Callable[[], object],
                                                  Callable[[], object] | None]],
                        runs: int, warmup: int = 3) -> dict[object, Stats]:
    """Like measure, for several cases at once, one sample of each in turn: a disk or
    CPU that slows down for a while slows every case alike, so ratios hold."""
    samples: dict[object, list[float]] = {key: [] for key in cases}
    order = list(cases)
    shuffle = random.Random(7).shuffle
    for round_ in range(warmup + runs):
        # A fixed order would make one case always follow the heaviest one (10,000
        # stats by the naive baseline) and pay for the caches it evicted.
        shuffle(order)
        for key in order:
            fn, setup = cases[key]
            if setup:
                setup()
            # Without this, the first fsync of a sample also commits what the previous
            # case (or the setup) left unwritten, e.g. the naive baseline's files. A
            # cron run meets a disk that flushed the last run's writes long ago.
            os.sync()
            start = time.perf_counter()
            fn()
            if round_ >= warmup:
                samples[key].append(time.perf_counter() - start)
    return {key: Stats(values) for key, values in samples.items()}


def durable_write_floor(folder: Path, data: bytes = STATE_1K) -> Callable[[], None]:
    """The physical cost of one durable file: temp, write, sync, replace, sync folder
    (fsync, or F_FULLFSYNC on macOS, as every durable write of the package)."""
    target = folder / "floor.json"

    def write() -> None:
        tmp = folder / ".floor.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, data)
        sync_to_disk(fd)
        os.close(fd)
        os.replace(tmp, target)
        dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        sync_to_disk(dfd, folder=True)
        os.close(dfd)

    return write


def fill_backups(folder: Path, stem: str, count: int, data: bytes = STATE_1K,
                 end: datetime | None = None, step: timedelta = timedelta(minutes=15)) -> list[str]:
    """Create `count` complete backups of `stem` (15 minutes apart, newest at `end`)."""
    folder.mkdir(parents=True, exist_ok=True)
    end = end or datetime.now(UTC) - timedelta(hours=1)
    digest = hashlib.sha256(data).hexdigest()
    names = []
    for i in range(count):
        name = format_backup_name(stem, ".json", end - i * step)
        (folder / name).write_bytes(data)
        (folder / (name + ".sha256")).write_text(f"{digest}  {name}\n")
        names.append(name)
    return names


def print_table(title: str, header: list[str], rows: list[list[object]]) -> None:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in [header, *cells]) for i in range(len(header))]
    print(f"\n## {title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return (f"{platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}")


def ratio(a: Stats, b: Stats) -> str:
    return f"{a.median / b.median:.2f}x"
