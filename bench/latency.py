"""Backup and restore latency against the durable-write floor and the naive baseline.

Every call uses a fresh BackupManager, as a cron run does. Medians over many
runs with [min-max], in milliseconds; the cases of a table are sampled in turn
(interleaved), so the ratios compare like with like.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from common import (
    STATE_1K,
    durable_write_floor,
    fill_backups,
    machine,
    measure_interleaved,
    print_table,
    ratio,
)
from naive import naive_backup, naive_restore

from backup_manager import BackupManager
from backup_manager.formats import format_backup_name
from backup_manager.retention import RetentionPolicy, plan_retention

GENEROUS = dict(keep_last=36_500, keep_daily=36_500, retention_days=36_500)  # keep all


def steady_state_names(now: datetime) -> list[datetime]:
    """What default retention leaves after a year of writes every 15 minutes."""
    times = [now - timedelta(minutes=15 * i) for i in range(365 * 96)]
    plan = plan_retention(((format_backup_name("s", ".json", t), t) for t in times),
                          RetentionPolicy())
    return [d.when for d in plan if d.keep]


def prefilled(folder: Path, n: int) -> tuple[Path, Callable[[], None]]:
    """A folder holding n backups, and the setup that keeps it so between runs:
    an empty folder is emptied again, a full one only grows by the runs."""
    folder.mkdir()
    if n:
        fill_backups(folder, "s", n)

    def reset() -> None:
        if n == 0:
            shutil.rmtree(folder)
            folder.mkdir()

    return folder, reset


def bench_backup(root: Path, runs: int, sizes: list[int]) -> dict:
    state = root / "state" / "s.json"
    state.parent.mkdir(parents=True)
    state.write_bytes(STATE_1K)
    floor_dir = root / "floor"
    floor_dir.mkdir()
    cases: dict = {"floor": (durable_write_floor(floor_dir), None)}
    for n in sizes:
        folder, reset = prefilled(root / f"ours-{n}", n)
        cases[("ours", n)] = (
            lambda folder=folder: BackupManager(folder, **GENEROUS).backup_state_file(state),
            reset)
        naive_dir, reset_naive = prefilled(root / f"naive-{n}", n)
        cases[("naive", n)] = (lambda d=naive_dir: naive_backup(state, d), reset_naive)
    steady = root / "steady"
    steady.mkdir()
    now = datetime.now(UTC)
    for when in steady_state_names(now - timedelta(minutes=15)):
        fill_backups(steady, "s", 1, end=when)
    steady_count = sum(1 for _ in steady.glob("s_*.json"))
    cases["steady"] = (lambda: BackupManager(steady).backup_state_file(state), None)
    results = measure_interleaved(cases, runs)
    results["steady_count"] = steady_count
    return results


def damage_newest(folder: Path, count: int) -> None:
    for path in sorted(folder.glob("s_*.json"))[-count:]:
        data = bytearray(path.read_bytes())
        data[10] ^= 1
        path.write_bytes(bytes(data))


def bench_restore(root: Path, runs: int, sizes: list[int]) -> dict:
    live = root / "live" / "s.json"
    live.parent.mkdir(parents=True)

    def remove_live():
        live.unlink(missing_ok=True)

    cases: dict = {}
    for n in sizes:
        folder = root / f"restore-{n}"
        fill_backups(folder, "s", n)
        cases[("ours", n)] = (
            lambda folder=folder: BackupManager(folder, **GENEROUS).restore(live), remove_live)
        cases[("naive", n)] = (lambda folder=folder: naive_restore(live, folder), remove_live)
        damaged = root / f"damaged-{n}"
        fill_backups(damaged, "s", max(n, 11))
        damage_newest(damaged, 10)
        cases[("damaged", n)] = (
            lambda folder=damaged: BackupManager(folder, **GENEROUS).restore(live), remove_live)
    return measure_interleaved(cases, runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--dir", help="where to put the test folders (default: a temp dir)")
    args = parser.parse_args()
    sizes = [0, 1000, 10000]
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="dalio-bench-") as tmp:
        root = Path(tmp)
        print(f"machine: {machine()}; folder: {'temp dir' if not args.dir else args.dir}; "
              f"runs per cell: {args.runs}")
        b = bench_backup(root / "b", args.runs, sizes)
        floor = b["floor"]
        rows = [["durable write floor (1 KB)", floor.cell(), "1.00x", ""]]
        for n in sizes:
            rows.append([f"backup, {n:,} existing", b[("ours", n)].cell(),
                         ratio(b[("ours", n)], floor),
                         f"naive {b[('naive', n)].cell()} -> ours is "
                         f"{b[('naive', n)].median / b[('ours', n)].median:.2f}x faster"])
        rows.append([f"backup, steady state ({b['steady_count']} kept)", b["steady"].cell(),
                     ratio(b["steady"], floor),
                     f"{b['steady'].median / b[('ours', 0)].median:.2f}x the cost at 0"])
        print_table("Backup latency, ms: median [min-max]",
                    ["case", "ours", "vs floor", "comparison"], rows)

        r = bench_restore(root / "r", args.runs, [1, 1000, 10000])
        rows = []
        for n in [1, 1000, 10000]:
            ours, naive, dmg = r[("ours", n)], r[("naive", n)], r[("damaged", n)]
            rows.append([f"{n:,}", ours.cell(), naive.cell(),
                         f"{naive.median / ours.median:.2f}x", dmg.cell(),
                         f"{dmg.median / ours.median:.2f}x"])
        print_table("Restore latency (live file missing), ms: median [min-max]",
                    ["backups", "ours", "naive", "ours faster by", "newest 10 damaged",
                     "damaged / clean"], rows)


if __name__ == "__main__":
    main()
